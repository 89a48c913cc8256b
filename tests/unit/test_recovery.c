/* test_recovery.c -- restart tests for the ingest fast path, through core/service.h over the
 * SQLite store.
 *
 * Additive events (sum and count meters without a window) are stored in event blocks, their
 * identifiers live only in the in-memory index and their usage in the live overlay until a
 * checkpoint. All three are rebuilt when the service opens. If that goes wrong a restart
 * either loses usage (under-billing), double counts it, or forgets identifiers so that a
 * client's retry after a restart is billed twice. These tests record thousands of events,
 * close and reopen the service on the same directory (with a fake clock, as test_service.c),
 * and check the exact totals, that every identifier is still a duplicate, and that a
 * cancellation survives the restart -- after a clean close, and after a process that dies
 * without closing (in a forked child) having acknowledged events both before and after a
 * checkpoint, so recovery must replay exactly the blocks and cancellations written since.
 * And that the writer thread raises its priority after large batches only, and that
 * identifiers leave the index once their retention window has passed (live and at start-up),
 * and never when asked to keep them.
 */
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "core/billing.h"
#include "core/metering.h"
#include "core/service.h"
#include "store/sqlite.h"

#define T0 INT64_C(1717243200)   /* 2024-06-01T12:00:00Z */
#define DAY0 INT64_C(1717200000) /* 2024-06-01T00:00:00Z */
#define NEVENTS 5000
#define BATCH 1000

typedef struct fixture {
    char dir[64];
    int64_t now; /* read by the writer thread too: accessed atomically */
    int64_t elapsed; /* the clock that is never stepped (tg_clock.elapsed), likewise */
    tg_clock clock;
    tg_service *svc;
    tg_scope scope;
    char customer[TG_ID_MAX];
    tg_meter meter;
    tg_arena a;
    int fold_ms; /* the service's fold interval (0: its default) */
    bool no_boost; /* the service's no_priority_boost */
    int identifier_days; /* the service's identifier_days */
    int64_t event_time; /* events' timestamps end here (0: T0) */
} fixture;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n(&((fixture *)ctx)->now, __ATOMIC_SEQ_CST);
}

static int64_t fake_elapsed(void *ctx)
{
    return __atomic_load_n(&((fixture *)ctx)->elapsed, __ATOMIC_SEQ_CST);
}

static void rm_dir(const char *dir)
{
    const char *names[] = {"tollgate.db", "tollgate.db-wal", "tollgate.db-shm",
                           "tollgate.db-journal"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int open_service(fixture *f)
{
    tg_service_config cfg = {.readers = 2, .fold_interval_ms = f->fold_ms,
                             .no_priority_boost = f->no_boost,
                             .identifier_days = f->identifier_days};
    tg_err err = {0};
    int rc = tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, &cfg, &err);
    if (rc)
        fprintf(stderr, "tg_service_open: %d %s\n", rc, err.msg);
    return rc;
}

/* Closes the service (draining the writer) and opens it again on the same directory. */
static void reopen(fixture *f)
{
    tg_service_close(f->svc);
    f->svc = NULL;
    __atomic_add_fetch(&f->now, 60, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&f->elapsed, 60, __ATOMIC_SEQ_CST);
    assert_int_equal(open_service(f), TG_OK);
}

static int setup_folding_every(void **state, int fold_ms)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->fold_ms = fold_ms;
    snprintf(f->dir, sizeof f->dir, "/tmp/tg-recovery-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->now = T0;
    f->clock.now = fake_now;
    f->clock.elapsed = fake_elapsed;
    f->clock.ctx = f;
    tg_arena_init(&f->a, 0);
    if (open_service(f)) {
        rm_dir(f->dir);
        free(f);
        return -1;
    }
    char secret[TG_ID_MAX];
    tg_err err = {0};
    if (tg_key_create(f->svc, false, secret, &err) ||
        tg_key_authenticate(f->svc, secret, &f->scope, &err)) {
        fprintf(stderr, "key: %s\n", err.msg);
        return -1;
    }
    tg_customer_patch p;
    memset(&p, 0, sizeof p);
    tg_customer c;
    if (tg_customer_create(f->svc, &f->scope, &p, &f->a, &c, &err)) {
        fprintf(stderr, "customer: %s\n", err.msg);
        return -1;
    }
    snprintf(f->customer, sizeof f->customer, "%s", c.id);

    tg_meter spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.display_name, sizeof spec.display_name, "API calls");
    snprintf(spec.event_name, sizeof spec.event_name, "api_call");
    snprintf(spec.customer_key, sizeof spec.customer_key, "stripe_customer_id");
    snprintf(spec.value_key, sizeof spec.value_key, "value");
    spec.formula = TG_FORMULA_SUM;
    spec.event_time_window = TG_WINDOW_NONE;
    if (tg_meter_create(f->svc, &f->scope, &spec, &f->meter, &err)) {
        fprintf(stderr, "meter: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_folding_every(state, 0);
}

/* Folds only when the service closes: the tests below choose when spills happen. */
static int setup_folding_at_close(void **state)
{
    return setup_folding_every(state, 24 * 3600 * 1000);
}

static int teardown(void **state)
{
    fixture *f = *state;
    tg_service_close(f->svc);
    tg_arena_free(&f->a);
    rm_dir(f->dir);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

#define assert_dec_equal(a, b)                                                                \
    do {                                                                                      \
        char buf_a_[TG_DEC_STR_MAX], buf_b_[TG_DEC_STR_MAX];                                  \
        tg_dec_format((a), buf_a_);                                                           \
        tg_dec_format((b), buf_b_);                                                           \
        assert_string_equal(buf_a_, buf_b_);                                                  \
    } while (0)

/* One event being built, with its payload and value text next to it. */
typedef struct ev {
    tg_kv kv[3];
    char value[32];
    tg_event e;
} ev;

/* The value of event i: varied, with up to 12 fraction digits, some negative-free. */
static void value_of(size_t i, char *buf, size_t n)
{
    switch (i % 4) {
    case 0:
        snprintf(buf, n, "%zu", i % 97);
        break;
    case 1:
        snprintf(buf, n, "%zu.%03zu", i % 13, i % 1000);
        break;
    case 2:
        snprintf(buf, n, "0.%012zu", (size_t)(i * 7919 % 1000000000000ULL));
        break;
    default:
        snprintf(buf, n, "123456789.5");
        break;
    }
}

static tg_dec value_dec(size_t i)
{
    char buf[32];
    value_of(i, buf, sizeof buf);
    tg_dec d = 0;
    if (tg_dec_parse(buf, strlen(buf), &d))
        fail_msg("bad value %s", buf);
    return d;
}

static void ev_init(ev *x, const fixture *f, const char *prefix, size_t i)
{
    memset(x, 0, sizeof *x);
    value_of(i, x->value, sizeof x->value);
    x->kv[0] = (tg_kv){"stripe_customer_id", f->customer};
    x->kv[1] = (tg_kv){"value", x->value};
    x->kv[2] = (tg_kv){"region", i % 2 ? "eu" : ""}; /* an extra key, stored in the block */
    x->e.payload.items = x->kv;
    x->e.payload.n = 3;
    snprintf(x->e.event_name, sizeof x->e.event_name, "api_call");
    snprintf(x->e.identifier, sizeof x->e.identifier, "%s-%zu", prefix, i);
    x->e.timestamp = (f->event_time ? f->event_time : T0) - (int64_t)(i % 7200); /* 2 hours */
}

/* Prepares and records events [from, from + n) with the identifier prefix, in batches.
 * Returns how many results equal want, or -1 (with a message on stderr) when a call failed.
 * Uses no cmocka assertions, so a forked child can run it. */
static long record_core(fixture *f, const char *prefix, size_t from, size_t n, int want)
{
    ev *xs = calloc(BATCH, sizeof *xs);
    tg_event *events = calloc(BATCH, sizeof *events);
    int *results = calloc(BATCH, sizeof *results);
    long matched = -1;
    if (!xs || !events || !results) {
        fprintf(stderr, "  out of memory\n");
        goto out;
    }
    matched = 0;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < BATCH ? n - done : BATCH;
        for (size_t j = 0; j < k; j++) {
            ev_init(&xs[j], f, prefix, from + done + j);
            tg_err err = {0};
            int rc = tg_event_prepare(f->svc, &f->scope, &xs[j].e, NULL, &err);
            if (rc) {
                fprintf(stderr, "  prepare %s-%zu: %d %s\n", prefix, from + done + j, rc,
                        err.msg);
                matched = -1;
                goto out;
            }
            events[j] = xs[j].e;
            results[j] = 12345;
        }
        tg_err err = {0};
        int rc = tg_events_record(f->svc, &f->scope, events, k, results, NULL, 0, &err);
        if (rc) {
            fprintf(stderr, "  tg_events_record: %d %s\n", rc, err.msg);
            matched = -1;
            goto out;
        }
        for (size_t j = 0; j < k; j++)
            if (results[j] == want)
                matched++;
            else if ((size_t)matched + 5 > done + j) /* report the first few */
                fprintf(stderr, "  %s-%zu: result %d, want %d\n", prefix, from + done + j,
                        results[j], want);
        done += k;
    }
out:
    free(xs);
    free(events);
    free(results);
    return matched;
}

static size_t record_range(fixture *f, const char *prefix, size_t from, size_t n, int want)
{
    long matched = record_core(f, prefix, from, n, want);
    if (matched < 0)
        fail_msg("recording %s-%zu.. failed (see above)", prefix, from);
    return (size_t)matched;
}

/* The usage of the fixture's customer in [from, to), as one summary. */
static tg_dec usage_between(fixture *f, int64_t from, int64_t to)
{
    tg_summary *rows = NULL;
    size_t n = 0;
    bool more = true;
    tg_err err = {0};
    int rc = tg_summary_list(f->svc, &f->scope, f->meter.id, f->customer, from, to,
                             TG_WINDOW_NONE, 10, 0, 0, &f->a, &rows, &n, &more, &err);
    if (rc)
        fail_msg("tg_summary_list: %d %s", rc, err.msg);
    assert_int_equal(n, 1);
    assert_false(more);
    return rows[0].value;
}

/* The usage of DAY0. */
static tg_dec total(fixture *f)
{
    return usage_between(f, DAY0, DAY0 + 86400);
}

static tg_dec expected_total(size_t from, size_t n)
{
    tg_dec sum = 0;
    for (size_t i = from; i < from + n; i++)
        assert_int_equal(tg_dec_add(sum, value_dec(i), &sum), 0);
    return sum;
}

/* Time passes to now (both clocks move), and the events recorded next carry it. */
static void set_now(fixture *f, int64_t now)
{
    __atomic_add_fetch(&f->elapsed, now - __atomic_load_n(&f->now, __ATOMIC_SEQ_CST),
                       __ATOMIC_SEQ_CST);
    __atomic_store_n(&f->now, now, __ATOMIC_SEQ_CST);
    f->event_time = now;
}

/* The wall clock is set to now, by hand or at boot: no time passes. */
static void step_wall_clock(fixture *f, int64_t now)
{
    __atomic_store_n(&f->now, now, __ATOMIC_SEQ_CST);
}

/* Each batch is a writer turn, and a sweep prunes one of the index's 64 partitions a turn. */
static void run_writer_turns(fixture *f, const char *prefix, size_t turns)
{
    for (size_t i = 0; i < turns; i++)
        assert_int_equal(record_range(f, prefix, i, 1, TG_OK), 1);
}

/* ---------------------------------------------------------------- tests */

static void test_reopen_rebuilds_totals_and_identifiers(void **state)
{
    fixture *f = *state;
    tg_dec want = expected_total(0, NEVENTS);
    assert_int_equal(record_range(f, "evt", 0, NEVENTS, TG_OK), NEVENTS);
    assert_dec_equal(total(f), want);

    reopen(f);
    assert_dec_equal(total(f), want);
    /* every identifier is still taken: the index was rebuilt from the stored blocks */
    assert_int_equal(record_range(f, "evt", 0, NEVENTS, TG_EDUPLICATE), NEVENTS);
    assert_dec_equal(total(f), want);

    /* new identifiers are still accepted, and survive a second restart with the old ones */
    assert_int_equal(record_range(f, "more", 0, 500, TG_OK), 500);
    tg_dec want2 = want;
    assert_int_equal(tg_dec_add(want2, expected_total(0, 500), &want2), 0);
    assert_dec_equal(total(f), want2);

    reopen(f);
    assert_dec_equal(total(f), want2);
    assert_int_equal(record_range(f, "more", 0, 500, TG_EDUPLICATE), 500);
    assert_int_equal(record_range(f, "evt", 0, NEVENTS, TG_EDUPLICATE), NEVENTS);
    assert_dec_equal(total(f), want2);
}

static void test_cancel_survives_reopen(void **state)
{
    fixture *f = *state;
    const size_t n = 1000, canceled = 421;
    tg_dec want = expected_total(0, n);
    assert_int_equal(record_range(f, "evt", 0, n, TG_OK), n);
    assert_dec_equal(total(f), want);

    tg_err err = {0};
    char id[64];
    snprintf(id, sizeof id, "evt-%zu", canceled);
    int rc = tg_event_cancel(f->svc, &f->scope, "api_call", id, &err);
    if (rc)
        fail_msg("tg_event_cancel(%s): %d %s", id, rc, err.msg);
    assert_int_equal(tg_dec_sub(want, value_dec(canceled), &want), 0);
    assert_dec_equal(total(f), want);

    reopen(f);
    assert_dec_equal(total(f), want);
    /* the event is still known as canceled: a second cancel is refused, as before the restart */
    tg_err e2 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", id, &e2), TG_EINVAL);
    assert_dec_equal(total(f), want);
    /* the canceled identifier is not free for reuse either: nothing is counted twice */
    assert_int_equal(record_range(f, "evt", 0, n, TG_EDUPLICATE), n);
    assert_dec_equal(total(f), want);

    /* a second restart does not apply the cancellation twice */
    reopen(f);
    assert_dec_equal(total(f), want);
}

/* What the crash children leave: events a-0..1999 and b-0..999, less a-1500 and b-300. */
static tg_dec crash_children_total(void)
{
    tg_dec want = expected_total(0, 2000);
    assert_int_equal(tg_dec_add(want, expected_total(0, 1000), &want), 0);
    assert_int_equal(tg_dec_sub(want, value_dec(1500), &want), 0);
    assert_int_equal(tg_dec_sub(want, value_dec(300), &want), 0);
    return want;
}

/* Closes f's service and runs child(f) in a forked process that exits without closing
 * anything or running atexit handlers: a crash after its acknowledged writes. */
static void run_crash_child(fixture *f, int (*child)(fixture *))
{
    tg_service_close(f->svc);
    f->svc = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child(f));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("crash child failed (status %#x)", status);
}

/* The child of test_crash_replays: records, lets the writer checkpoint while idle, records
 * more and cancels one event of each part, then exits without closing anything (the
 * acknowledged writes are durable; the overlay and the index die with the process). */
static int crash_child(fixture *f)
{
    if (open_service(f))
        return 1;
    if (record_core(f, "a", 0, 2000, TG_OK) != 2000)
        return 2;
    usleep(1600 * 1000); /* the idle writer folds the overlay into the stored buckets */
    if (record_core(f, "b", 0, 1000, TG_OK) != 1000)
        return 3;
    const char *cancel[] = {"a-1500", "b-300"};
    for (int i = 0; i < 2; i++) {
        tg_err err = {0};
        int rc = tg_event_cancel(f->svc, &f->scope, "api_call", cancel[i], &err);
        if (rc) {
            fprintf(stderr, "  child: cancel %s: %d %s\n", cancel[i], rc, err.msg);
            return 4;
        }
    }
    return 0;
}

/* Records ids[0..n) as one tg_events_record call (one batch); results into results. */
static void record_batch(fixture *f, const char *const *ids, size_t n, int *results)
{
    ev *xs = calloc(n, sizeof *xs);
    tg_event *events = calloc(n, sizeof *events);
    assert_true(xs && events);
    for (size_t j = 0; j < n; j++) {
        ev_init(&xs[j], f, "unused", j);
        snprintf(xs[j].e.identifier, sizeof xs[j].e.identifier, "%s", ids[j]);
        tg_err err = {0};
        assert_int_equal(tg_event_prepare(f->svc, &f->scope, &xs[j].e, NULL, &err), TG_OK);
        events[j] = xs[j].e;
        results[j] = 12345;
    }
    tg_err err = {0};
    int rc = tg_events_record(f->svc, &f->scope, events, n, results, NULL, 0, &err);
    free(xs);
    free(events);
    if (rc)
        fail_msg("tg_events_record: %d %s", rc, err.msg);
}

/* Every position of a batch is indexed under its own identifier: a retry of any event of a
 * 20-event batch (alone, or the same identifier later in the same batch) is a duplicate, and
 * any of them can be canceled. Positions 0..7 matter: the writer hashes a few events ahead to
 * prefetch index slots, and must not mix up whose hash is whose. */
static void test_every_batch_position_indexed(void **state)
{
    fixture *f = *state;
    enum { N = 20 };
    char names[N][16];
    const char *ids[N];
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "pos-%zu", i);
        ids[i] = names[i];
    }
    int results[N];
    record_batch(f, ids, N, results);
    tg_dec want = expected_total(0, N);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(results[i], TG_OK);
    assert_dec_equal(total(f), want);

    /* canceling the first positions (the ones at risk) finds them */
    int bad = 0;
    for (size_t i = 0; i < 4; i++) {
        tg_err err = {0};
        int rc = tg_event_cancel(f->svc, &f->scope, "api_call", ids[i], &err);
        if (rc) {
            fprintf(stderr, "  cancel %s (batch position %zu): %d %s\n", ids[i], i, rc, err.msg);
            bad++;
        } else {
            assert_int_equal(tg_dec_sub(want, value_dec(i), &want), 0);
        }
    }
    assert_dec_equal(total(f), want);

    /* retries of single events, canceled or not */
    for (size_t i = 0; i < N; i++) {
        int r;
        record_batch(f, &ids[i], 1, &r);
        if (r != TG_EDUPLICATE) {
            fprintf(stderr, "  retry of %s (batch position %zu) alone: result %d, want %d\n",
                    ids[i], i, r, TG_EDUPLICATE);
            bad++;
            /* it was counted again: keep the expected total in step for the checks below */
            assert_int_equal(tg_dec_add(want, value_dec(i), &want), 0);
        }
    }

    /* a new batch where identifier 0 comes again at position 10 */
    const char *again[N];
    char fresh[N][16];
    for (size_t i = 0; i < N; i++) {
        snprintf(fresh[i], sizeof fresh[i], "new-%zu", i);
        again[i] = fresh[i];
    }
    again[10] = again[0];
    record_batch(f, again, N, results);
    for (size_t i = 0; i < N; i++) {
        int w = i == 10 ? TG_EDUPLICATE : TG_OK;
        if (results[i] != w) {
            fprintf(stderr, "  batch with %s at positions 0 and 10: result[%zu] %d, want %d\n",
                    again[0], i, results[i], w);
            bad++;
        }
    }

    if (bad)
        fail_msg("%d identifier checks failed (see above)", bad);
}

/* An integer the query gives about the fixture's account (?1), read through SQLite beside
 * the service; -1 when it gives none. */
static long long block_query(fixture *f, const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/tollgate.db", f->dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    long long n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, f->scope.account, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

/* One batch of 2,600 events is stored as blocks of 1,024, 1,024 and 552 events: every event
 * is indexed under the block that holds it, before and after a restart (the index holds the
 * block's number, and a lookup reads only that block). */
static void test_batch_stored_in_parts(void **state)
{
    fixture *f = *state;
    enum { N = 2600 };
    static char names[N][16];
    static const char *ids[N];
    static int results[N];
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "part-%zu", i);
        ids[i] = names[i];
    }
    record_batch(f, ids, N, results);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(results[i], TG_OK);
    assert_int_equal(block_query(f, "SELECT count(*) FROM event_blocks WHERE account = ?1"), 3);
    tg_dec want = expected_total(0, N);
    assert_dec_equal(total(f), want);

    const size_t edges[] = {0, 1023, 1024, 2047, 2048, 2599};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++) {
        int r;
        record_batch(f, &ids[edges[e]], 1, &r);
        assert_int_equal(r, TG_EDUPLICATE);
    }
    for (size_t e = 1; e < sizeof edges / sizeof edges[0]; e += 2) { /* 1023, 2047, 2599 */
        tg_err err = {0};
        int rc = tg_event_cancel(f->svc, &f->scope, "api_call", ids[edges[e]], &err);
        if (rc)
            fail_msg("tg_event_cancel(%s): %d %s", ids[edges[e]], rc, err.msg);
        assert_int_equal(tg_dec_sub(want, value_dec(edges[e]), &want), 0);
    }
    assert_dec_equal(total(f), want);

    reopen(f);
    assert_dec_equal(total(f), want);
    record_batch(f, ids, N, results);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(results[i], TG_EDUPLICATE);
    tg_err again = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", ids[2047], &again),
                     TG_EINVAL);
    tg_err other = {0};
    int rc = tg_event_cancel(f->svc, &f->scope, "api_call", ids[2048], &other);
    if (rc)
        fail_msg("tg_event_cancel(%s) after the restart: %d %s", ids[2048], rc, other.msg);
    assert_int_equal(tg_dec_sub(want, value_dec(2048), &want), 0);
    assert_dec_equal(total(f), want);
}

/* Block sequence numbers past 2^32: a server that commits a thousand small batches a second
 * gets there in about fifty days. The index keeps 32 bits of a block's number; identifiers in
 * the blocks numbered 2^32 - 2 and later must still be duplicates, be found to cancel, and be
 * indexed again at start-up. The store numbers a block one past the highest, so an empty block
 * of another account stored as 2^32 - 3 puts the next ones there; block 1, stored before it,
 * shares its 32 bits with block 2^32 - 1. */
static void test_block_numbers_past_32_bits(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "low", 0, BATCH, TG_OK), BATCH);
    tg_service_close(f->svc);
    f->svc = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/tollgate.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *filler = "INSERT INTO event_blocks(seq,account,livemode,created,count,data)"
                         " VALUES (4294967293,'acct_filler',0,0,0,x'010000')";
    assert_int_equal(sqlite3_exec(db, filler, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(open_service(f), TG_OK);

    enum { BATCHES = 5 }; /* blocks 2^32 - 2 to 2^32 + 2 */
    assert_int_equal(record_range(f, "wrap", 0, BATCHES * BATCH, TG_OK), BATCHES * BATCH);
    assert_int_equal(block_query(f, "SELECT max(seq) FROM event_blocks WHERE account = ?1"),
                     INT64_C(4294967298));
    tg_dec want = expected_total(0, BATCHES * BATCH);
    assert_int_equal(tg_dec_add(want, expected_total(0, BATCH), &want), 0);
    assert_dec_equal(total(f), want);
    assert_int_equal(record_range(f, "wrap", 0, BATCHES * BATCH, TG_EDUPLICATE), BATCHES * BATCH);
    assert_int_equal(record_range(f, "low", 0, BATCH, TG_EDUPLICATE), BATCH);
    tg_err low_err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "low-5", &low_err), TG_OK);
    assert_int_equal(tg_dec_sub(want, value_dec(5), &want), 0);
    for (size_t b = 0; b < BATCHES; b++) { /* one event of each block canceled */
        char id[64];
        snprintf(id, sizeof id, "wrap-%zu", b * BATCH + 7);
        tg_err err = {0};
        int rc = tg_event_cancel(f->svc, &f->scope, "api_call", id, &err);
        if (rc)
            fail_msg("tg_event_cancel(%s): %d %s", id, rc, err.msg);
        assert_int_equal(tg_dec_sub(want, value_dec(b * BATCH + 7), &want), 0);
    }
    assert_dec_equal(total(f), want);

    reopen(f);
    assert_dec_equal(total(f), want);
    assert_int_equal(record_range(f, "wrap", 0, BATCHES * BATCH, TG_EDUPLICATE), BATCHES * BATCH);
    assert_int_equal(record_range(f, "low", 0, BATCH, TG_EDUPLICATE), BATCH);
    assert_dec_equal(total(f), want);

    /* Retention across the wrap: block 2^32 - 1 has block 1's locator. 36 days on, "low" and
     * "wrap" leave the index, and events written since stay. */
    set_now(f, T0 + 20 * 86400);
    assert_int_equal(record_range(f, "fresh", 0, BATCH, TG_OK), BATCH);
    set_now(f, T0 + 36 * 86400 + 7200);
    run_writer_turns(f, "turn", 70);
    assert_int_equal(record_range(f, "fresh", 0, BATCH, TG_EDUPLICATE), BATCH);
    assert_int_equal(record_range(f, "wrap", 0, BATCHES * BATCH, TG_OK), BATCHES * BATCH);
    assert_int_equal(record_range(f, "low", 0, BATCH, TG_OK), BATCH);
}

static void test_crash_replays(void **state)
{
    fixture *f = *state;
    run_crash_child(f, crash_child);

    tg_dec want = crash_children_total();

    assert_int_equal(open_service(f), TG_OK);
    assert_dec_equal(total(f), want);
    assert_int_equal(record_range(f, "a", 0, 2000, TG_EDUPLICATE), 2000);
    assert_int_equal(record_range(f, "b", 0, 1000, TG_EDUPLICATE), 1000);
    assert_dec_equal(total(f), want);
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "a-1500", &err), TG_EINVAL);
    tg_err e2 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "b-300", &e2), TG_EINVAL);

    /* a clean restart after the replay counts nothing twice */
    reopen(f);
    assert_dec_equal(total(f), want);
}

/* The thread id of the thread named tg-writer (0: none). */
static pid_t writer_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    pid_t tid = 0;
    for (struct dirent *de; !tid && (de = readdir(d));) {
        char path[300], line[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *fp = fopen(path, "r");
        if (fp && fgets(line, sizeof line, fp) && strcmp(line, "tg-writer\n") == 0)
            tid = (pid_t)atoi(de->d_name);
        if (fp)
            fclose(fp);
    }
    closedir(d);
    return tid;
}

/* The writer thread's nice value, from field 19 of its /proc stat line (fields count from 3
 * after the parenthesised name); INT_MIN when it cannot be read. */
static int writer_nice(void)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)writer_tid());
    FILE *fp = fopen(path, "r");
    if (!fp)
        return INT_MIN;
    const char *p = fgets(line, sizeof line, fp) ? strrchr(line, ')') : NULL;
    fclose(fp);
    for (int field = 2; p && field < 19; field++)
        p = strchr(p + 1, ' ');
    return p ? atoi(p + 1) : INT_MIN;
}

/* Records n new events (identifiers prefix-0 ...) as one batch. */
static void record_new_batch(fixture *f, const char *prefix, size_t n)
{
    char(*names)[32] = calloc(n, sizeof *names);
    const char **ids = calloc(n, sizeof *ids);
    int *results = calloc(n, sizeof *results);
    assert_true(names && ids && results);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s-%zu", prefix, i);
        ids[i] = names[i];
    }
    record_batch(f, ids, n, results);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(results[i], TG_OK);
    free(names);
    free(ids);
    free(results);
}

/* The writer runs BOOST_NICE (10) ahead of the process after a batch of 256 events or more and
 * at the process's priority after a smaller one (writer.c, "Priority"); a renice from outside
 * between boosts is where it drops back to. Where the process may not raise a priority (no
 * CAP_SYS_NICE, RLIMIT_NICE 0) this only checks that the writer's priority is left alone:
 * the boost itself is checked where it is allowed (as root, as in CI). */
static void test_writer_priority_follows_batch_size(void **state)
{
    fixture *f = *state;
    int base = getpriority(PRIO_PROCESS, 0); /* this thread's, which the writer inherited */
    int ahead = base - 10 < -20 ? -20 : base - 10;
    bool may_raise = setpriority(PRIO_PROCESS, (id_t)gettid(), ahead) == 0;
    assert_int_equal(setpriority(PRIO_PROCESS, (id_t)gettid(), base), 0);
    int boosted = may_raise ? ahead : base;
    assert_int_equal(writer_nice(), base);
    record_new_batch(f, "small", 255);
    assert_int_equal(writer_nice(), base);
    record_new_batch(f, "large", 256);
    assert_int_equal(writer_nice(), boosted);
    record_new_batch(f, "larger", 1000);
    assert_int_equal(writer_nice(), boosted);
    record_new_batch(f, "single", 1);
    assert_int_equal(writer_nice(), base);
    /* an operator's renice (lowering is always allowed) holds across a boost */
    assert_int_equal(setpriority(PRIO_PROCESS, (id_t)writer_tid(), base + 5), 0);
    record_new_batch(f, "again", 300);
    assert_int_equal(writer_nice(), may_raise ? base + 5 - 10 : base + 5);
    record_new_batch(f, "after", 1);
    assert_int_equal(writer_nice(), base + 5);
}

/* With no_priority_boost (`--no-priority-boost`) the writer keeps the process's priority after
 * large batches too (where raising it is allowed, it would otherwise be 10 below). */
static void test_writer_priority_boost_off(void **state)
{
    fixture *f = *state;
    f->no_boost = true;
    reopen(f);
    int base = getpriority(PRIO_PROCESS, 0);
    record_new_batch(f, "large", 300);
    assert_int_equal(writer_nice(), base);
    record_new_batch(f, "larger", 1000);
    assert_int_equal(writer_nice(), base);
}

/* ---------------------------------------------------------------- spills */

/* ---------------------------------------------------------------- identifier retention */

#define RETAINED 1000

/* Records "old" at T0 and "mid" 20 days later. 36 days and 2 hours after T0 (LATER), the
 * hour "old" was written in has passed out of a 36-day window, "mid" has not. */
#define LATER (T0 + 36 * 86400 + 7200)

static void record_old_and_mid(fixture *f)
{
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
    set_now(f, T0 + 20 * 86400);
    assert_int_equal(record_range(f, "mid", 0, RETAINED, TG_OK), RETAINED);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
}

static void test_identifiers_leave_index_after_retention(void **state)
{
    fixture *f = *state;
    record_old_and_mid(f);
    set_now(f, LATER);
    run_writer_turns(f, "turn", 70);
    /* "old" is new again (with a timestamp the window accepts); "mid" and the turns are not */
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
    assert_int_equal(record_range(f, "mid", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    assert_int_equal(record_range(f, "turn", 0, 70, TG_EDUPLICATE), 70);
    /* the second "old" stays in the index: a restart finds it, and "mid" */
    reopen(f);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    assert_int_equal(record_range(f, "mid", 0, RETAINED, TG_EDUPLICATE), RETAINED);
}

/* A running server keeps identifiers by the hour they were written in: until the end of
 * that hour is 36 days old, never before the last of them is. (Start-up ages each block by
 * its own time, so after a restart the first of an hour may leave up to an hour sooner, still
 * 36 days after it was written.) */
static void test_retention_holds_to_the_end_of_the_hour(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "early", 0, 100, TG_OK), 100); /* T0: an hour's start */
    set_now(f, T0 + 3599);
    assert_int_equal(record_range(f, "late", 0, 100, TG_OK), 100);
    set_now(f, T0 + 36 * 86400 + 3598); /* "late" is 36 days old less a second */
    run_writer_turns(f, "turn", 70);
    assert_int_equal(record_range(f, "late", 0, 100, TG_EDUPLICATE), 100);
    assert_int_equal(record_range(f, "early", 0, 100, TG_EDUPLICATE), 100);
    set_now(f, T0 + 36 * 86400 + 3600);
    run_writer_turns(f, "turn2", 70);
    assert_int_equal(record_range(f, "late", 0, 100, TG_OK), 100);
    assert_int_equal(record_range(f, "early", 0, 100, TG_OK), 100);
}

static void test_start_up_indexes_the_window_only(void **state)
{
    fixture *f = *state;
    record_old_and_mid(f);
    set_now(f, LATER);
    /* One batch later (its turn prunes one partition of 64), a restart leaves "old" out. */
    assert_int_equal(record_range(f, "recent", 0, 1, TG_OK), 1);
    reopen(f);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
    assert_int_equal(record_range(f, "mid", 0, RETAINED, TG_EDUPLICATE), RETAINED);
}

/* Once a sweep has finished and the old blocks' usage is folded, start-up does not read them:
 * made unreadable, they stop nothing, and the usage they held is still in the summaries. A
 * longer window reads them again. */
static void test_start_up_skips_blocks_outside_the_window(void **state)
{
    fixture *f = *state;
    tg_dec old_total = expected_total(0, RETAINED);
    record_old_and_mid(f);
    set_now(f, LATER);
    run_writer_turns(f, "turn", 70); /* the sweep, and a batch after it stores its cutoff */
    tg_service_close(f->svc);        /* folds everything */
    f->svc = NULL;

    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE event_blocks SET data = x'ffff' WHERE account = ?1 AND created < %lld",
             (long long)(T0 + 3600));
    block_query(f, sql);
    assert_int_equal(block_query(f, "SELECT count(*) FROM event_blocks WHERE account = ?1 "
                                    "AND data = x'ffff'"),
                     1);
    assert_int_equal(open_service(f), TG_OK); /* block 1 unread */
    assert_dec_equal(total(f), old_total);    /* "old", at T0, from the pages */
    assert_int_equal(record_range(f, "mid", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    tg_service_close(f->svc);
    f->svc = NULL;

    /* In a 60-day window "old" is young: its block must be read, and cannot be. */
    tg_err err = {0};
    tg_service_config cfg = {.readers = 2, .identifier_days = 60};
    assert_int_equal(tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, &cfg,
                                     &err),
                     TG_ESTORE);
    assert_non_null(strstr(err.msg, "Corrupt event block 1"));
    f->svc = NULL;
    assert_int_equal(open_service(f), TG_OK); /* for teardown */
}

/* The child of test_start_up_reads_unfolded_blocks: folding only at close, it records "old"
 * at T0, moves past its window and runs the sweep (whose cutoff a later batch stores), then
 * dies with "old"'s usage only in the overlay. No cmocka assertions: it runs in a child. */
static int window_crash_child(fixture *f)
{
    if (open_service(f))
        return 1;
    if (record_core(f, "old", 0, RETAINED, TG_OK) != RETAINED)
        return 2;
    set_now(f, LATER);
    for (size_t i = 0; i < 70; i++)
        if (record_core(f, "turn", i, 1, TG_OK) != 1)
            return 3;
    return 0;
}

/* Blocks out of the identifier window are still read at start-up until their usage is
 * folded: their identifiers are not indexed, but their usage is replayed. */
static void test_start_up_reads_unfolded_blocks(void **state)
{
    fixture *f = *state;
    run_crash_child(f, window_crash_child);
    assert_int_equal(block_query(f, "SELECT CAST(value AS INTEGER) FROM settings WHERE "
                                    "name = 'identifier_window' AND ?1 IS NOT NULL"),
                     2); /* the sweep's cutoff was stored: block 1 is out of the window */
    set_now(f, LATER);
    assert_int_equal(open_service(f), TG_OK);
    assert_dec_equal(total(f), expected_total(0, RETAINED));
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED); /* not indexed */
}

/* A wall clock set five weeks ahead and back again ages no identifier: ageing's "now" moves
 * no faster than the clock that is never stepped. */
static void test_a_stepped_clock_ages_nothing(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
    step_wall_clock(f, LATER);
    f->event_time = LATER;
    run_writer_turns(f, "turn", 70); /* no sweep: the hour of "old" is not out of the window */
    step_wall_clock(f, T0 + 3600);
    f->event_time = 0; /* "old"'s own timestamps, which the window accepts again */
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
}

/* Started with its wall clock five weeks ahead, the server still indexes the window before
 * the newest block it stored, and ages nothing until time has passed. A downtime of weeks
 * looks the same, and counts as twelve hours. */
static void test_start_up_with_the_clock_ahead(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
    tg_service_close(f->svc);
    step_wall_clock(f, LATER);
    assert_int_equal(open_service(f), TG_OK);
    f->event_time = LATER;
    run_writer_turns(f, "turn", 70);
    step_wall_clock(f, T0 + 3600);
    f->event_time = 0;
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
}

/* A test clock stands still, so its customer accepts the same timestamps for as long as the
 * clock lives: the clock, deleted 30 days after its creation as at Stripe, takes its
 * customer's events with it, before any identifier could leave the index. */
/* How many of events [0, n) with the prefix tg_event_prepare refuses with code. */
static size_t refused(fixture *f, const char *prefix, size_t n, int code)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        ev x;
        ev_init(&x, f, prefix, i);
        tg_err err = {0};
        k += tg_event_prepare(f->svc, &f->scope, &x.e, NULL, &err) == code;
    }
    return k;
}

static void test_events_of_a_deleted_test_clock_are_refused(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    tg_test_clock clock;
    assert_int_equal(tg_test_clock_create(f->svc, &f->scope, T0, "frozen", &f->a, &clock, &err),
                     TG_OK);
    assert_int_equal(clock.deletes_after, T0 + 30 * 86400);
    tg_customer_patch p;
    memset(&p, 0, sizeof p);
    p.test_clock = clock.id;
    tg_customer c;
    assert_int_equal(tg_customer_create(f->svc, &f->scope, &p, &f->a, &c, &err), TG_OK);
    char own[TG_ID_MAX];
    snprintf(own, sizeof own, "%s", f->customer);
    snprintf(f->customer, sizeof f->customer, "%s", c.id); /* record_range's customer */
    assert_int_equal(record_range(f, "tc", 0, 100, TG_OK), 100);
    set_now(f, T0 + 30 * 86400 - 1);
    f->event_time = 0; /* the clock's own time, T0 */
    assert_int_equal(record_range(f, "tc", 0, 100, TG_EDUPLICATE), 100);
    assert_int_equal(record_range(f, "tc-new", 0, 1, TG_OK), 1);
    set_now(f, T0 + 30 * 86400);
    f->event_time = 0;
    assert_int_equal(refused(f, "tc-new2", 1, TG_ECUSTOMER), 1);
    snprintf(f->customer, sizeof f->customer, "%s", own);
    set_now(f, LATER);
    run_writer_turns(f, "turn", 70); /* "tc" leaves the index */
    snprintf(f->customer, sizeof f->customer, "%s", c.id);
    f->event_time = 0;
    assert_int_equal(refused(f, "tc", 100, TG_ECUSTOMER), 100);
}

/* The usage from 40 days before DAY0 to a year after. */
static tg_dec total_all(fixture *f)
{
    return usage_between(f, DAY0 - 40 * 86400, DAY0 + 365 * 86400);
}

/* Records n events of value 1, a minute apart going back from ts. */
static void record_minutes(fixture *f, const char *prefix, size_t n, int64_t ts)
{
    ev *xs = calloc(n, sizeof *xs);
    tg_event *events = calloc(n, sizeof *events);
    int *results = calloc(n, sizeof *results);
    assert_true(xs && events && results);
    for (size_t j = 0; j < n; j++) {
        ev_init(&xs[j], f, prefix, j);
        snprintf(xs[j].value, sizeof xs[j].value, "1");
        xs[j].e.timestamp = ts - 60 * (int64_t)j;
        tg_err err = {0};
        if (tg_event_prepare(f->svc, &f->scope, &xs[j].e, NULL, &err))
            fail_msg("prepare: %s", err.msg);
        events[j] = xs[j].e;
    }
    tg_err err = {0};
    assert_int_equal(tg_events_record(f->svc, &f->scope, events, n, results, NULL, 0, &err),
                     TG_OK);
    for (size_t j = 0; j < n; j++)
        assert_int_equal(results[j], TG_OK);
    free(xs);
    free(events);
    free(results);
}

/* An event and its cancellation meet in the overlay and net to zero; the shard freezes (4,096
 * deltas) and drops the zero minute, so no page or spill ever records either. Start-up must
 * judge both alike (by their shard's stored fold marks): replaying the event without its
 * cancellation counted the canceled value again (found in review, with this test). */
static void test_netted_cancellation_stays_netted(void **state)
{
    fixture *f = *state;
    set_now(f, T0 + 3600);
    assert_int_equal(record_range(f, "E", 1, 1, TG_OK), 1);
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "E-1", &err), TG_OK);
    assert_dec_equal(total_all(f), 0);
    record_minutes(f, "minute", 4200, DAY0 - 60);
    tg_dec want = (tg_dec)4200 * 1000000000000LL;
    assert_dec_equal(total_all(f), want);
    for (int i = 0; i < 3; i++) {
        reopen(f); /* a close spills the shard, the next takes the spills to the pages */
        assert_dec_equal(total_all(f), want);
    }
}

/* The child of test_bad_fold_marks_read_everything: records 100 more events and dies with
 * them only in the overlay (folding happens at close only). */
static int unfolded_round; /* set by the parent before each child */

static int unfolded_crash_child(fixture *f)
{
    char prefix[16];
    snprintf(prefix, sizeof prefix, "u%d", unfolded_round);
    if (open_service(f))
        return 1;
    return record_core(f, prefix, 0, 100, TG_OK) == 100 ? 0 : 2;
}

/* A fold_marks row that is not exactly what the writer writes (another shard count, a
 * number out of range or negative, text after the last pair) loads as no marks, and
 * start-up replays every unfolded event. Each row below claims every shard folded far past
 * the blocks written, so a reader that took it would skip the replay and lose usage. */
static void test_bad_fold_marks_read_everything(void **state)
{
    fixture *f = *state;
    const struct {
        const char *shards, *mark, *tail;
    } rows[] = {{"128", "9000000", ""},
                {"64", "9000000", " 1 1"},
                {"64", "99999999999999999999", ""},
                {"64", "-1", ""}};
    tg_dec want = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unfolded_round = (int)i;
        run_crash_child(f, unfolded_crash_child);
        assert_int_equal(tg_dec_add(want, expected_total(0, 100), &want), 0);
        char row[64 * 44 + 64] = "", sql[sizeof row + 96];
        snprintf(row, sizeof row, "%s 1717243200", rows[i].shards); /* count, newest */
        for (int s = 0; s < 64; s++)
            snprintf(row + strlen(row), sizeof row - strlen(row), " %s %s", rows[i].mark,
                     rows[i].mark);
        snprintf(row + strlen(row), sizeof row - strlen(row), "%s", rows[i].tail);
        snprintf(sql, sizeof sql,
                 "UPDATE settings SET value = '%s' WHERE name = 'fold_marks' AND ?1 IS NOT NULL",
                 row);
        block_query(f, sql);
        assert_int_equal(open_service(f), TG_OK);
        assert_dec_equal(total(f), want);
        tg_service_close(f->svc); /* folds, and writes a good row */
        f->svc = NULL;
    }
    assert_int_equal(open_service(f), TG_OK);
    assert_dec_equal(total(f), want);
}

/* An identifier_window row not exactly as the writer writes it (a number past 64 bits, text
 * after the days, a leading space) loads as no window, and start-up indexes every block.
 * Each row claims the window starts past every block written, so a reader that took it
 * would skip every folded block and take their events' retries as new. */
static void test_bad_identifier_window_reads_everything(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "w", 0, 100, TG_OK), 100);
    tg_dec want = expected_total(0, 100);
    const char *rows[] = {"99999999999999999999 36", "1000000 36 7", "1000000 36x",
                          " 1000000 36", "1000000  36"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        tg_service_close(f->svc); /* folds: the fold marks cover every block */
        f->svc = NULL;
        char sql[160];
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO settings(name, value) VALUES ('identifier_window', '%s')",
                 rows[i]);
        block_query(f, sql);
        assert_int_equal(open_service(f), TG_OK);
        if (record_range(f, "w", 0, 100, TG_EDUPLICATE) != 100)
            fail_msg("identifier_window row '%s' was taken: retries counted again", rows[i]);
        assert_dec_equal(total(f), want);
    }
}

static void test_identifiers_kept_forever_when_asked(void **state)
{
    fixture *f = *state;
    f->identifier_days = -1;
    reopen(f);
    record_old_and_mid(f);
    set_now(f, LATER);
    run_writer_turns(f, "turn", 70);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    reopen(f);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    /* a longer window than the default keeps them past 36 days too */
    f->identifier_days = 40;
    reopen(f);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_EDUPLICATE), RETAINED);
    set_now(f, T0 + 40 * 86400 + 7200);
    assert_int_equal(record_range(f, "recent", 0, 1, TG_OK), 1);
    reopen(f);
    assert_int_equal(record_range(f, "old", 0, RETAINED, TG_OK), RETAINED);
}

static int count_row(void *ctx, const tg_spill *row)
{
    (void)row;
    (*(size_t *)ctx)++;
    return 0;
}

/* The spilled rows in f's directory, read through a store connection of its own. */
static size_t spill_rows(fixture *f)
{
    tg_store *s = NULL;
    tg_err err = {0};
    assert_int_equal(tg_store_sqlite_open(f->dir, &s, &err), TG_OK);
    size_t n = 0;
    assert_int_equal(s->ops->spill_each(s, -1, -1, -1, count_row, &n, &err), TG_OK);
    s->ops->close(s);
    return n;
}

/* A close folds every shard: a shard's first folds spill its live usage (no page is read),
 * and a restart sends the next fold of a shard with spills to its pages. Totals are exact
 * in every state: usage in spills only, in spills plus live deltas and a cancellation, and
 * in pages again with the spills deleted. */
static void test_spills_then_pages(void **state)
{
    fixture *f = *state;
    assert_int_equal(record_range(f, "a", 0, 2000, TG_OK), 2000);
    tg_dec want = expected_total(0, 2000);
    reopen(f);
    assert_int_equal(spill_rows(f), 1); /* one pair: one row */
    assert_dec_equal(total(f), want);

    assert_int_equal(record_range(f, "b", 0, 1000, TG_OK), 1000);
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "a-1500", &err), TG_OK);
    assert_int_equal(tg_dec_add(want, expected_total(0, 1000), &want), 0);
    assert_int_equal(tg_dec_sub(want, value_dec(1500), &want), 0);
    assert_dec_equal(total(f), want); /* spill + live deltas */

    reopen(f);
    assert_int_equal(spill_rows(f), 0); /* folded into the pages */
    assert_dec_equal(total(f), want);
    assert_int_equal(record_range(f, "a", 0, 2000, TG_EDUPLICATE), 2000);
    reopen(f);
    assert_dec_equal(total(f), want);
}

/* The events a summary test recorded, to work out each window's usage by brute force. */
typedef struct ref_event {
    char id[32];
    int64_t ts;
    tg_dec value;
    bool canceled;
} ref_event;

typedef struct ref_log {
    ref_event ev[8000];
    size_t n;
} ref_log;

/* Records events [0, n) of prefix with timestamps event_time - (i % 7200), and notes them. */
static void ref_record(fixture *f, ref_log *log, const char *prefix, size_t n, int64_t event_time)
{
    f->event_time = event_time;
    assert_int_equal(record_range(f, prefix, 0, n, TG_OK), n);
    for (size_t i = 0; i < n; i++) {
        assert_true(log->n < sizeof log->ev / sizeof log->ev[0]);
        ref_event *e = &log->ev[log->n++];
        snprintf(e->id, sizeof e->id, "%s-%zu", prefix, i);
        e->ts = event_time - (int64_t)(i % 7200);
        e->value = value_dec(i);
        e->canceled = false;
    }
}

static void ref_cancel(fixture *f, ref_log *log, const char *id)
{
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", id, &err), TG_OK);
    for (size_t i = 0; i < log->n; i++)
        if (strcmp(log->ev[i].id, id) == 0)
            log->ev[i].canceled = true;
}

/* The usage the log says [from, to) holds: its sum, and whether any event remains. */
static bool ref_usage(const ref_log *log, int64_t from, int64_t to, tg_dec *sum)
{
    bool any = false;
    *sum = 0;
    for (size_t i = 0; i < log->n; i++)
        if (!log->ev[i].canceled && log->ev[i].ts >= from && log->ev[i].ts < to) {
            assert_int_equal(tg_dec_add(*sum, log->ev[i].value, sum), 0);
            any = true;
        }
    return any;
}

/* Compares the windows of `grain` in [start, end), paged by `limit` with starting_after,
 * then again with ending_before from the oldest, with the log: a window with no remaining
 * event is absent, one whose events are worth 0 is present. */
static void check_windows(fixture *f, const ref_log *log, tg_window grouping, int64_t start,
                          int64_t end, int limit)
{
    int64_t grain = tg_window_seconds(grouping);
    tg_summary want[128];
    size_t nwant = 0;
    for (int64_t w = end - grain; w >= start; w -= grain) {
        tg_dec sum;
        if (ref_usage(log, w, w + grain, &sum)) {
            assert_true(nwant < sizeof want / sizeof want[0]);
            want[nwant++] = (tg_summary){w, w + grain, sum};
        }
    }
    tg_summary got[128];
    size_t ngot = 0;
    bool more = true;
    for (int64_t after = 0; more;) {
        tg_summary *rows = NULL;
        size_t n = 0;
        tg_err err = {0};
        assert_int_equal(tg_summary_list(f->svc, &f->scope, f->meter.id, f->customer, start, end,
                                         grouping, limit, after, 0, &f->a, &rows, &n, &more,
                                         &err),
                         TG_OK);
        if (after && !n)
            fail_msg("has_more was true, and the next page is empty (after %lld)",
                     (long long)after);
        for (size_t i = 0; i < n; i++) {
            assert_true(ngot < sizeof got / sizeof got[0]);
            got[ngot++] = rows[i];
        }
        if (n)
            after = rows[n - 1].start;
    }
    assert_int_equal(ngot, nwant);
    for (size_t i = 0; i < ngot; i++) {
        assert_int_equal(got[i].start, want[i].start);
        assert_dec_equal(got[i].value, want[i].value);
    }
    /* from the oldest window towards the newest: each page is the windows just newer */
    for (size_t at = nwant; at > 1;) {
        tg_summary *rows = NULL;
        size_t n = 0;
        tg_err err = {0};
        assert_int_equal(tg_summary_list(f->svc, &f->scope, f->meter.id, f->customer, start, end,
                                         grouping, limit, 0, want[at - 1].start, &f->a, &rows,
                                         &n, &more, &err),
                         TG_OK);
        size_t expect = at - 1 < (size_t)limit ? at - 1 : (size_t)limit;
        assert_int_equal(n, expect);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(rows[i].start, want[at - 1 - n + i].start);
            assert_dec_equal(rows[i].value, want[at - 1 - n + i].value);
        }
        at -= n;
    }
}

/* Every way of reading the log's usage: hours, days, and the whole range as one summary,
 * over whole days and over a range that cuts hours at minutes. */
static void check_summaries(fixture *f, const ref_log *log)
{
    int64_t start = DAY0 - 2 * 86400, end = DAY0 + 86400;
    check_windows(f, log, TG_WINDOW_HOUR, start, end, 3);
    check_windows(f, log, TG_WINDOW_DAY, start, end, 2);
    tg_dec want;
    ref_usage(log, start, end, &want);
    assert_dec_equal(usage_between(f, start, end), want);
    int64_t from = T0 - 30 * 3600 - 1500, to = T0 - 5 * 3600 - 1800 + 420;
    ref_usage(log, from, to, &want);
    assert_dec_equal(usage_between(f, from, to), want);
}

/* Summaries sum a window's usage from day pages, spills and live deltas alike: each state is
 * checked against the events by brute force, with cancellations of stored events, a live
 * cancellation netted with an event of the same minute (no count, some sum), an hour whose
 * every event is canceled (absent) and one whose only event is worth 0 (present). */
static void test_summaries_sum_pages_spills_and_live(void **state)
{
    fixture *f = *state;
    ref_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    ref_record(f, log, "a", 2000, T0 - 30 * 3600); /* two hours of the day before */
    ref_record(f, log, "b", 3000, T0 - 5 * 3600);
    ref_record(f, log, "c", 3, T0 - 10 * 3600 - 600); /* an hour of its own, two minutes */
    check_summaries(f, log);                          /* all live */
    reopen(f);
    assert_true(spill_rows(f) > 0);
    check_summaries(f, log); /* spilled */
    ref_record(f, log, "d", 500, T0 - 30 * 3600);
    ref_cancel(f, log, "a-6");
    ref_cancel(f, log, "a-1999");
    ref_cancel(f, log, "b-17");
    check_summaries(f, log); /* spills and live */
    reopen(f);
    check_summaries(f, log);
    reopen(f);
    assert_int_equal(spill_rows(f), 0);
    check_summaries(f, log); /* pages */
    ref_record(f, log, "g", 1, T0 - 30 * 3600 - 1000);
    ref_cancel(f, log, "a-1001"); /* g-0's minute: a live delta of no count and some sum */
    check_summaries(f, log);
    ref_cancel(f, log, "c-0");
    ref_cancel(f, log, "c-1");
    ref_cancel(f, log, "c-2");
    check_summaries(f, log); /* the hour's pages are all canceled by live deltas */
    ref_record(f, log, "e", 2, T0 - 10 * 3600 - 600);
    ref_cancel(f, log, "e-1"); /* e-0 is worth 0 */
    check_summaries(f, log);
    reopen(f);
    check_summaries(f, log);
    free(log);
}

/* A page of hourly summaries may stop reading day pages once it has more windows than it
 * needs, but live cancellations can empty some of them after that count: the page must
 * still hold the newest windows of the range, and nothing from before its start. Day D's
 * page holds 20h to 23h; 21h to 23h are canceled live, an event at 03h of D is live, and
 * the day before D has a window in its page. */
static void test_summary_pages_after_live_cancellations(void **state)
{
    fixture *f = *state;
    ref_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    int64_t d = DAY0 - 86400;
    ref_record(f, log, "p", 2, d - 86400 + 5 * 3600 + 60);
    const char *hours[] = {"h20", "h21", "h22", "h23"};
    for (int h = 0; h < 4; h++)
        ref_record(f, log, hours[h], 2, d + (20 + h) * 3600 + 60);
    reopen(f);
    reopen(f);
    assert_int_equal(spill_rows(f), 0); /* in pages */
    const char *canceled[] = {"h21-0", "h21-1", "h22-0", "h22-1", "h23-0", "h23-1"};
    for (size_t i = 0; i < sizeof canceled / sizeof canceled[0]; i++)
        ref_cancel(f, log, canceled[i]);
    ref_record(f, log, "q", 2, d + 3 * 3600 + 60);
    for (int limit = 1; limit <= 3; limit++) {
        check_windows(f, log, TG_WINDOW_HOUR, d + 20 * 3600, d + 86400, limit);
        check_windows(f, log, TG_WINDOW_HOUR, d - 86400, d + 86400, limit);
    }
    free(log);
}

/* Events of several customers (70 pairs over 64 shards, so shards hold several pairs): the
 * fold into pages meets pairs with spills and live usage, with spills only, and with live
 * usage only, side by side in one shard. Each customer's total stays exact. */
static void test_spills_of_many_pairs(void **state)
{
    fixture *f = *state;
    enum { NC = 70, PER = 30 };
    char ids[NC][TG_ID_MAX];
    tg_dec want[NC];
    char mine[TG_ID_MAX];
    snprintf(mine, sizeof mine, "%s", f->customer);
    for (int c = 0; c < NC; c++) {
        tg_customer_patch p;
        memset(&p, 0, sizeof p);
        tg_customer cu;
        tg_err err = {0};
        assert_int_equal(tg_customer_create(f->svc, &f->scope, &p, &f->a, &cu, &err), TG_OK);
        snprintf(ids[c], sizeof ids[c], "%s", cu.id);
        want[c] = 0;
    }
    /* phase 0: customers 0..34; phase 1: customers 20..69 (one close between them) */
    for (int phase = 0; phase < 2; phase++) {
        for (int c = phase ? 20 : 0; c < (phase ? NC : 35); c++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "c%d-p%d", c, phase);
            memcpy(f->customer, ids[c], sizeof f->customer);
            assert_int_equal(record_range(f, prefix, (size_t)c, PER, TG_OK), PER);
            assert_int_equal(tg_dec_add(want[c], expected_total((size_t)c, PER), &want[c]), 0);
        }
        reopen(f); /* phase 0's close spills; the restart sends the next folds to pages */
        if (phase == 0)
            assert_true(spill_rows(f) == 35);
    }
    /* Shards that had spills went to their pages; the others spilled at this close. */
    size_t left = spill_rows(f);
    assert_true(left > 0 && left < 35);
    for (int round = 0; round < 2; round++) {
        for (int c = 0; c < NC; c++) {
            memcpy(f->customer, ids[c], sizeof f->customer);
            assert_dec_equal(total(f), want[c]);
        }
        reopen(f);
    }
    assert_int_equal(spill_rows(f), 0);
    snprintf(f->customer, sizeof f->customer, "%s", mine);
}

/* Folding every millisecond, so a pair's shard spills again and again between batches: up
 * to three spill rows a pair, merged on read and at the fourth fold into the pages, with a
 * cancellation of the round before in each round. Totals are exact after every round and
 * after restarts. */
static void test_repeated_spills(void **state)
{
    fixture *f = *state;
    tg_service_close(f->svc);
    f->svc = NULL;
    f->fold_ms = 1;
    assert_int_equal(open_service(f), TG_OK);
    tg_dec want = 0;
    size_t most_rows = 0;
    for (size_t round = 0; round < 12; round++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "r%zu", round);
        assert_int_equal(record_range(f, prefix, round * 300, 300, TG_OK), 300);
        assert_int_equal(tg_dec_add(want, expected_total(round * 300, 300), &want), 0);
        if (round) { /* cancel an event of the round before, spilled or folded by now */
            char id[32];
            snprintf(id, sizeof id, "r%zu-%zu", round - 1, (round - 1) * 300 + 7);
            tg_err err = {0};
            assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", id, &err), TG_OK);
            assert_int_equal(tg_dec_sub(want, value_dec((round - 1) * 300 + 7), &want), 0);
        }
        usleep(30 * 1000); /* idle: the writer folds on its 1 ms schedule */
        size_t rows = spill_rows(f);
        if (rows > most_rows)
            most_rows = rows;
        assert_dec_equal(total(f), want);
    }
    assert_true(most_rows >= 2); /* several rows a pair were read and merged */
    reopen(f);
    assert_dec_equal(total(f), want);
    reopen(f);
    assert_dec_equal(total(f), want);
}

/* The child of test_crash_after_spill: records, closes (spilling), opens, records more and
 * cancels one event of each part, then dies without closing. */
static int spill_crash_child(fixture *f)
{
    if (open_service(f))
        return 1;
    if (record_core(f, "a", 0, 2000, TG_OK) != 2000)
        return 2;
    tg_service_close(f->svc);
    if (open_service(f))
        return 3;
    if (record_core(f, "b", 0, 1000, TG_OK) != 1000)
        return 4;
    const char *cancel[] = {"a-1500", "b-300"};
    for (int i = 0; i < 2; i++) {
        tg_err err = {0};
        if (tg_event_cancel(f->svc, &f->scope, "api_call", cancel[i], &err))
            return 5;
    }
    return 0;
}

/* After a crash, start-up replays exactly what the spills do not include: the spilled events
 * are not counted twice, the later events and both cancellations are counted once. */
static void test_crash_after_spill(void **state)
{
    fixture *f = *state;
    run_crash_child(f, spill_crash_child);
    assert_int_equal(spill_rows(f), 1);

    tg_dec want = crash_children_total();
    assert_int_equal(open_service(f), TG_OK);
    assert_dec_equal(total(f), want);
    reopen(f); /* folds the spill and the replayed usage into the pages */
    assert_int_equal(spill_rows(f), 0);
    assert_dec_equal(total(f), want);
    assert_int_equal(record_range(f, "b", 0, 1000, TG_EDUPLICATE), 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reopen_rebuilds_totals_and_identifiers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_replays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_batch_position_indexed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_numbers_past_32_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_stored_in_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_priority_follows_batch_size, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_writer_priority_boost_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identifiers_leave_index_after_retention, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_up_indexes_the_window_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_holds_to_the_end_of_the_hour, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_up_skips_blocks_outside_the_window, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_up_reads_unfolded_blocks,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_a_stepped_clock_ages_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_netted_cancellation_stays_netted,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_bad_fold_marks_read_everything,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_bad_identifier_window_reads_everything,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_events_of_a_deleted_test_clock_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_up_with_the_clock_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identifiers_kept_forever_when_asked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_spills_then_pages, setup_folding_at_close,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_spill, setup_folding_at_close,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_spills_of_many_pairs, setup_folding_at_close,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_summaries_sum_pages_spills_and_live,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_summary_pages_after_live_cancellations,
                                        setup_folding_at_close, teardown),
        cmocka_unit_test_setup_teardown(test_repeated_spills, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
