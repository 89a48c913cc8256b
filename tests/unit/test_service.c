/* test_service.c -- use-case tests for core/service.h over the SQLite store.
 *
 * These run the real service (writer thread, group commit, reader pool, meter registry) on a
 * fresh mkdtemp directory with a fake clock the test moves by hand, so time rules (24-hour
 * cancellation, event timestamps) are exact and repeatable. They check what a customer is
 * billed: exact decimal sums, duplicate identifiers, pre-aggregation windows keeping the most
 * recently received event, cancellations, hourly summaries with their cursors, one active meter
 * per event name, idempotency claims, and that everything survives a close and reopen. And
 * that the entitlement registry keeps live usage sessions only (its memory and the walk every
 * check makes follow the calls in progress, not every call a customer ever made). That a data
 * directory from before schedules had rows of their own gets them at its first start. And
 * the SHA-256 that keys are stored under, against known answers.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/ids.h"
#include "core/billing.h"
#include "core/billing_records.h"
#include "core/record.h"
#include "core/entitlements.h"
#include "core/metering.h"
#include "core/service.h"
#include "core/service_internal.h"
#include "core/webhooks.h"
#include "store/sqlite.h"

#define T0 INT64_C(1717243200)  /* 2024-06-01T12:00:00Z, hour aligned */
#define DAY0 INT64_C(1717200000) /* 2024-06-01T00:00:00Z */
#define HOUR INT64_C(3600)

typedef struct fixture {
    char dir[64];
    int64_t now; /* read by the writer thread too: accessed atomically */
    tg_clock clock;
    tg_service *svc;
    tg_scope scope;
    char customer[TG_ID_MAX];
    tg_arena a;
} fixture;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n((int64_t *)ctx, __ATOMIC_SEQ_CST);
}

static void set_now(fixture *f, int64_t t)
{
    __atomic_store_n(&f->now, t, __ATOMIC_SEQ_CST);
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
    tg_service_config cfg = {.readers = 2};
    tg_err err = {0};
    int rc = tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, &cfg, &err);
    if (rc)
        fprintf(stderr, "tg_service_open: %d %s\n", rc, err.msg);
    return rc;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/tg-service-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->now = T0;
    f->clock.now = fake_now;
    f->clock.ctx = &f->now;
    tg_arena_init(&f->a, 0);
    if (open_service(f)) {
        rm_dir(f->dir);
        free(f);
        return -1;
    }
    /* The scope comes from a real key, as the HTTP layer would get it. */
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
    *state = f;
    return 0;
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

static tg_dec D(const char *s)
{
    tg_dec d = 0;
    if (tg_dec_parse(s, strlen(s), &d))
        fail_msg("bad decimal literal in test: %s", s);
    return d;
}

static tg_meter create_meter(fixture *f, const char *event_name, tg_formula formula,
                             tg_window window)
{
    tg_meter spec, out;
    memset(&spec, 0, sizeof spec);
    memset(&out, 0, sizeof out);
    snprintf(spec.display_name, sizeof spec.display_name, "Meter %s", event_name);
    snprintf(spec.event_name, sizeof spec.event_name, "%s", event_name);
    snprintf(spec.customer_key, sizeof spec.customer_key, "stripe_customer_id");
    snprintf(spec.value_key, sizeof spec.value_key, "value");
    spec.formula = formula;
    spec.event_time_window = window;
    tg_err err = {0};
    int rc = tg_meter_create(f->svc, &f->scope, &spec, &out, &err);
    if (rc)
        fail_msg("tg_meter_create(%s): %d %s", event_name, rc, err.msg);
    assert_true(out.active);
    assert_int_equal(strncmp(out.id, "mtr_", 4), 0);
    return out;
}

/* An event being built: the payload lives next to it. */
typedef struct ev {
    tg_kv kv[2];
    tg_event e;
} ev;

static void ev_init(ev *x, const char *event_name, const char *identifier, const char *customer,
                    const char *value, int64_t ts)
{
    memset(x, 0, sizeof *x);
    x->kv[0] = (tg_kv){"stripe_customer_id", customer};
    x->kv[1] = (tg_kv){"value", value};
    x->e.payload.items = x->kv;
    x->e.payload.n = value ? 2 : 1;
    snprintf(x->e.event_name, sizeof x->e.event_name, "%s", event_name);
    snprintf(x->e.identifier, sizeof x->e.identifier, "%s", identifier ? identifier : "");
    x->e.timestamp = ts;
}

/* Prepares and records one event; returns the prepare error, or the per-event result. */
static int record1(fixture *f, const char *event_name, const char *identifier, const char *value,
                   int64_t ts)
{
    ev x;
    ev_init(&x, event_name, identifier, f->customer, value, ts);
    tg_err err = {0};
    int rc = tg_event_prepare(f->svc, &f->scope, &x.e, NULL, &err);
    if (rc)
        return rc;
    int result = 12345;
    rc = tg_events_record(f->svc, &f->scope, &x.e, 1, &result, NULL, 0, &err);
    if (rc)
        fail_msg("tg_events_record: %d %s", rc, err.msg);
    return result;
}

static tg_dec total(fixture *f, const char *meter_id, int64_t start, int64_t end)
{
    tg_summary *rows = NULL;
    size_t n = 0;
    bool more = true;
    tg_err err = {0};
    int rc = tg_summary_list(f->svc, &f->scope, meter_id, f->customer, start, end,
                             TG_WINDOW_NONE, 10, 0, 0, &f->a, &rows, &n, &more, &err);
    if (rc)
        fail_msg("tg_summary_list: %d %s", rc, err.msg);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_int_equal(rows[0].start, start);
    assert_int_equal(rows[0].end, end);
    return rows[0].value;
}

/* ---------------------------------------------------------------- tests */

static void test_exact_sum_and_duplicates(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);

    /* nothing recorded yet: exactly one zero summary */
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), 0);

    /* two events in one record call */
    ev x[2];
    ev_init(&x[0], "api_call", "ev-1", f->customer, "0.1", T0 - 600);
    ev_init(&x[1], "api_call", "ev-2", f->customer, "0.2", T0 - 300);
    tg_err err = {0};
    for (int i = 0; i < 2; i++)
        assert_int_equal(tg_event_prepare(f->svc, &f->scope, &x[i].e, NULL, &err), TG_OK);
    assert_string_equal(x[0].e.meter_id, m.id);
    assert_string_equal(x[0].e.customer_id, f->customer);
    assert_int_equal(x[0].e.created, T0);
    tg_event events[2] = {x[0].e, x[1].e};
    int results[2] = {99, 99};
    assert_int_equal(tg_events_record(f->svc, &f->scope, events, 2, results, NULL, 0, &err),
                     TG_OK);
    assert_int_equal(results[0], TG_OK);
    assert_int_equal(results[1], TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.3"));

    /* the same identifier again: a duplicate, nothing changes */
    assert_int_equal(record1(f, "api_call", "ev-1", "100", T0 - 60), TG_EDUPLICATE);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.3"));

    /* duplicates within one batch: the first wins */
    ev y[2];
    ev_init(&y[0], "api_call", "ev-3", f->customer, "1", T0 - 120);
    ev_init(&y[1], "api_call", "ev-3", f->customer, "1000", T0 - 120);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tg_event_prepare(f->svc, &f->scope, &y[i].e, NULL, &err), TG_OK);
    tg_event ev2[2] = {y[0].e, y[1].e};
    assert_int_equal(tg_events_record(f->svc, &f->scope, ev2, 2, results, NULL, 0, &err), TG_OK);
    assert_int_equal(results[0], TG_OK);
    assert_int_equal(results[1], TG_EDUPLICATE);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("1.3"));

    /* an empty identifier gets a generated one */
    ev z;
    ev_init(&z, "api_call", "", f->customer, "0.7", T0);
    assert_int_equal(tg_event_prepare(f->svc, &f->scope, &z.e, NULL, &err), TG_OK);
    assert_true(strlen(z.e.identifier) > 0);
    int r = 99;
    assert_int_equal(tg_events_record(f->svc, &f->scope, &z.e, 1, &r, NULL, 0, &err), TG_OK);
    assert_int_equal(r, TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("2"));

    /* the range is [start, end): an event at T0 is outside [DAY0, T0) */
    assert_dec_equal(total(f, m.id, DAY0, T0), D("1.3"));
}

static void test_prepare_refusals(void **state)
{
    fixture *f = *state;
    create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);
    const struct {
        const char *event_name, *customer, *value;
        int64_t ts;
        int code;
    } cases[] = {
        {"unknown_event", NULL, "1", T0, TG_ENOMETER},
        {"api_call", "cus_doesnotexist", "1", T0, TG_ECUSTOMER},
        {"api_call", NULL, NULL, T0, TG_ENOVALUE},
        {"api_call", NULL, "1.2.3", T0, TG_EBADVALUE},
        {"api_call", NULL, "1", T0 - 35 * 86400 - 1, TG_ETOOOLD},
        {"api_call", NULL, "1", T0 + 301, TG_EFUTURE},
        {"api_call", NULL, "1", T0 - 35 * 86400, TG_OK},
        {"api_call", NULL, "1", T0 + 300, TG_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ev x;
        ev_init(&x, cases[i].event_name, "id", cases[i].customer ? cases[i].customer : f->customer,
                cases[i].value, cases[i].ts);
        tg_err err = {0};
        int rc = tg_event_prepare(f->svc, &f->scope, &x.e, NULL, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].code, err.msg);
    }
    /* a deleted customer is no customer */
    tg_err err = {0};
    assert_int_equal(tg_customer_delete(f->svc, &f->scope, f->customer, &err), TG_OK);
    ev x;
    ev_init(&x, "api_call", "id", f->customer, "1", T0);
    tg_err e2 = {0};
    assert_int_equal(tg_event_prepare(f->svc, &f->scope, &x.e, NULL, &e2), TG_ECUSTOMER);
    assert_string_equal(e2.param, "payload[stripe_customer_id]");
}

/* A request's meter memo gives each event what a lookup without it gives: found, inactive
 * and unknown names, more names than the memo holds, in any order. */
static void test_prepare_memo(void **state)
{
    fixture *f = *state;
    const char *names[] = {"m0", "m1", "m2", "m3", "m4", "m5", "gone", "unknown"};
    for (int i = 0; i < 6; i++)
        create_meter(f, names[i], i % 2 ? TG_FORMULA_COUNT : TG_FORMULA_SUM, TG_WINDOW_NONE);
    tg_meter gone = create_meter(f, "gone", TG_FORMULA_SUM, TG_WINDOW_NONE), out;
    tg_err err = {0};
    assert_int_equal(tg_meter_set_active(f->svc, &f->scope, gone.id, false, &out, &err), TG_OK);
    tg_meter_memo memo = {0};
    for (unsigned k = 0; k < 64; k++) {
        const char *name = names[(k * 5 + k / 8) % 8];
        ev with, without;
        char id[32];
        snprintf(id, sizeof id, "memo-%u", k);
        ev_init(&with, name, id, f->customer, "1", T0);
        ev_init(&without, name, id, f->customer, "1", T0);
        tg_err e1 = {0}, e2 = {0};
        int rc1 = tg_event_prepare(f->svc, &f->scope, &with.e, &memo, &e1);
        int rc2 = tg_event_prepare(f->svc, &f->scope, &without.e, NULL, &e2);
        if (rc1 != rc2 || strcmp(e1.msg, e2.msg) != 0)
            fail_msg("%s: %d '%s' with the memo, %d '%s' without", name, rc1, e1.msg, rc2,
                     e2.msg);
        assert_int_equal(rc1, !strcmp(name, "gone")      ? TG_EARCHIVED
                              : !strcmp(name, "unknown") ? TG_ENOMETER
                                                         : TG_OK);
        assert_int_equal(with.e.meter_seq, without.e.meter_seq);
        assert_string_equal(with.e.meter_id, without.e.meter_id);
        assert_int_equal(with.e.additive, without.e.additive);
        assert_int_equal(with.e.extras.n, without.e.extras.n);
    }
    assert_int_equal(memo.n, sizeof memo.items / sizeof memo.items[0]);
}

static void test_hour_window_keeps_latest_received(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "tokens", TG_FORMULA_SUM, TG_WINDOW_HOUR);
    int64_t h1 = T0 - 3 * HOUR, h2 = T0 - 2 * HOUR;

    /* separate record calls: the later received wins even with an older timestamp */
    assert_int_equal(record1(f, "tokens", "a", "5", h1 + 1800), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("5"));
    assert_int_equal(record1(f, "tokens", "b", "7", h1 + 60), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("7"));
    assert_int_equal(record1(f, "tokens", "c", "2", h1 + 3599), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("2"));
    /* a duplicate of a superseded event changes nothing */
    assert_int_equal(record1(f, "tokens", "a", "100", h1 + 10), TG_EDUPLICATE);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("2"));

    /* two events of another hour in one record call: the second wins */
    ev x[2];
    ev_init(&x[0], "tokens", "d", f->customer, "11", h2 + 10);
    ev_init(&x[1], "tokens", "e", f->customer, "13", h2 + 20);
    tg_err err = {0};
    for (int i = 0; i < 2; i++)
        assert_int_equal(tg_event_prepare(f->svc, &f->scope, &x[i].e, NULL, &err), TG_OK);
    tg_event events[2] = {x[0].e, x[1].e};
    int results[2] = {99, 99};
    assert_int_equal(tg_events_record(f->svc, &f->scope, events, 2, results, NULL, 0, &err),
                     TG_OK);
    assert_int_equal(results[0], TG_OK);
    assert_int_equal(results[1], TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("15"));

    /* hourly grouping shows one survivor per hour */
    tg_summary *rows = NULL;
    size_t n = 0;
    bool more = true;
    assert_int_equal(tg_summary_list(f->svc, &f->scope, m.id, f->customer, DAY0, DAY0 + 86400,
                                     TG_WINDOW_HOUR, 10, 0, 0, &f->a, &rows, &n, &more, &err),
                     TG_OK);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_int_equal(rows[0].start, h2);
    assert_dec_equal(rows[0].value, D("13"));
    assert_int_equal(rows[1].start, h1);
    assert_dec_equal(rows[1].value, D("2"));
}

static void test_cancel(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);
    tg_meter other = create_meter(f, "other_event", TG_FORMULA_SUM, TG_WINDOW_NONE);
    (void)other;
    assert_int_equal(record1(f, "api_call", "ev-1", "0.1", T0 - 30), TG_OK);
    assert_int_equal(record1(f, "api_call", "ev-2", "0.2", T0 - 20), TG_OK); /* same minute */
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.3"));

    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "ev-1", &err), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.2"));

    /* a second cancel is an error and changes nothing */
    tg_err e2 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "ev-1", &e2), TG_EINVAL);
    assert_string_equal(e2.param, "cancel[identifier]");
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.2"));

    /* unknown identifier, or the identifier under another event name */
    tg_err e3 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "ev-none", &e3),
                     TG_ENOTFOUND);
    tg_err e4 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "other_event", "ev-2", &e4),
                     TG_ENOTFOUND);
    tg_err e5 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "", &e5), TG_EMISSING);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.2"));

    /* the identifier stays taken after a cancel */
    assert_int_equal(record1(f, "api_call", "ev-1", "5", T0), TG_EDUPLICATE);

    /* 24 hours after receipt is the last moment to cancel */
    assert_int_equal(record1(f, "api_call", "ev-3", "3", T0 - 10), TG_OK);
    assert_int_equal(record1(f, "api_call", "ev-4", "4", T0 - 10), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("7.2"));
    set_now(f, T0 + 86400);
    tg_err e6 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "ev-4", &e6), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("3.2"));
    set_now(f, T0 + 86401);
    tg_err e7 = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "api_call", "ev-3", &e7), TG_EINVAL);
    assert_string_equal(e7.param, "cancel[identifier]");
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("3.2"));
}

static void test_cancel_windowed_survivor(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "tokens", TG_FORMULA_SUM, TG_WINDOW_HOUR);
    int64_t h = T0 - HOUR;
    assert_int_equal(record1(f, "tokens", "a", "5", h + 10), TG_OK);
    assert_int_equal(record1(f, "tokens", "b", "7", h + 20), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("7"));
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "tokens", "b", &err), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0"));
    /* canceling the superseded one does not resurrect anything */
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "tokens", "a", &err), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0"));

    /* a new event in the window counts again */
    assert_int_equal(record1(f, "tokens", "c", "3", h + 30), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("3"));
}

/* A canceled survivor of a window that a newer event then supersedes must stay canceled: a
 * second cancel of it is "already canceled" (TG_EINVAL), as for any other event. */
static void test_canceled_survivor_stays_canceled(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "tokens", TG_FORMULA_SUM, TG_WINDOW_HOUR);
    int64_t h = T0 - HOUR;
    assert_int_equal(record1(f, "tokens", "b", "7", h + 20), TG_OK);
    tg_err err = {0};
    assert_int_equal(tg_event_cancel(f->svc, &f->scope, "tokens", "b", &err), TG_OK);
    assert_int_equal(record1(f, "tokens", "c", "3", h + 30), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("3"));
    tg_err e2 = {0};
    int rc = tg_event_cancel(f->svc, &f->scope, "tokens", "b", &e2);
    if (rc != TG_EINVAL)
        fail_msg("second cancel of a canceled (then superseded) event: rc %d, want TG_EINVAL "
                 "(%d)", rc, TG_EINVAL);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("3"));
}

typedef struct want_row {
    int64_t start;
    const char *value;
} want_row;

static void check_page(fixture *f, const char *meter_id, tg_window g, int limit, int64_t after,
                       int64_t before, const want_row *want, size_t nwant, bool want_more)
{
    tg_summary *rows = NULL;
    size_t n = 99;
    bool more = !want_more;
    tg_err err = {0};
    int rc = tg_summary_list(f->svc, &f->scope, meter_id, f->customer, DAY0, DAY0 + 86400, g,
                             limit, after, before, &f->a, &rows, &n, &more, &err);
    if (rc)
        fail_msg("summary (limit %d after %lld before %lld): %d %s", limit, (long long)after,
                 (long long)before, rc, err.msg);
    if (n != nwant)
        fail_msg("summary (limit %d after %lld before %lld): %zu rows, want %zu", limit,
                 (long long)after, (long long)before, n, nwant);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].start, want[i].start);
        assert_int_equal(rows[i].end, want[i].start + tg_window_seconds(g));
        assert_dec_equal(rows[i].value, D(want[i].value));
    }
    if (more != want_more)
        fail_msg("summary (limit %d after %lld before %lld): has_more %d", limit,
                 (long long)after, (long long)before, more);
}

static void test_hourly_grouping_and_cursors(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);
    tg_meter c = create_meter(f, "api_count", TG_FORMULA_COUNT, TG_WINDOW_NONE);
    tg_meter l = create_meter(f, "api_last", TG_FORMULA_LAST, TG_WINDOW_NONE);
    int64_t h0 = T0 - 4 * HOUR, h1 = T0 - 3 * HOUR, h3 = T0 - HOUR; /* h2 has no events */
    const struct {
        const char *id;
        int64_t ts;
        const char *v;
    } evs[] = {
        {"a", h0 + 10, "1.5"},   {"b", h0 + 3599, "0.5"}, {"c", h1 + 60, "10"},
        {"d", h1 + 1800, "0.01"}, {"e", h3, "100"},       {"f", h3 + 120, "0.001"},
        {"g", h1 + 5, "3"},
    };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        char id[16];
        assert_int_equal(record1(f, "api_call", evs[i].id, evs[i].v, evs[i].ts), TG_OK);
        snprintf(id, sizeof id, "c-%s", evs[i].id);
        assert_int_equal(record1(f, "api_count", id, NULL, evs[i].ts), TG_OK);
        snprintf(id, sizeof id, "l-%s", evs[i].id);
        assert_int_equal(record1(f, "api_last", id, evs[i].v, evs[i].ts), TG_OK);
    }

    const want_row all[] = {{h3, "100.001"}, {h1, "13.01"}, {h0, "2"}};
    check_page(f, m.id, TG_WINDOW_HOUR, 10, 0, 0, all, 3, false);
    check_page(f, m.id, TG_WINDOW_HOUR, 3, 0, 0, all, 3, false);
    check_page(f, m.id, TG_WINDOW_HOUR, 2, 0, 0, all, 2, true);
    check_page(f, m.id, TG_WINDOW_HOUR, 1, 0, 0, all, 1, true);
    /* after_start: older windows */
    check_page(f, m.id, TG_WINDOW_HOUR, 2, h1, 0, &all[2], 1, false);
    check_page(f, m.id, TG_WINDOW_HOUR, 1, h3, 0, &all[1], 1, true);
    check_page(f, m.id, TG_WINDOW_HOUR, 5, h0, 0, NULL, 0, false);
    /* before_start: newer windows, the ones nearest the cursor */
    check_page(f, m.id, TG_WINDOW_HOUR, 1, 0, h0, &all[1], 1, true);
    check_page(f, m.id, TG_WINDOW_HOUR, 5, 0, h0, all, 2, false);
    check_page(f, m.id, TG_WINDOW_HOUR, 5, 0, h3, NULL, 0, false);

    /* day grouping: one window */
    const want_row day[] = {{DAY0, "115.011"}};
    check_page(f, m.id, TG_WINDOW_DAY, 10, 0, 0, day, 1, false);

    /* count and last per hour */
    const want_row counts[] = {{h3, "2"}, {h1, "3"}, {h0, "2"}};
    check_page(f, c.id, TG_WINDOW_HOUR, 10, 0, 0, counts, 3, false);
    const want_row lasts[] = {{h3, "0.001"}, {h1, "0.01"}, {h0, "0.5"}};
    check_page(f, l.id, TG_WINDOW_HOUR, 10, 0, 0, lasts, 3, false);
    assert_dec_equal(total(f, l.id, DAY0, DAY0 + 86400), D("0.001"));
    assert_dec_equal(total(f, c.id, DAY0, DAY0 + 86400), D("7"));

    /* misaligned range and unknown meter */
    tg_summary *rows = NULL;
    size_t n = 0;
    bool more = false;
    tg_err err = {0};
    assert_int_equal(tg_summary_list(f->svc, &f->scope, m.id, f->customer, DAY0 + 60,
                                     DAY0 + 86400, TG_WINDOW_HOUR, 10, 0, 0, &f->a, &rows, &n,
                                     &more, &err),
                     TG_EINVAL);
    tg_err e2 = {0};
    assert_int_equal(tg_summary_list(f->svc, &f->scope, "mtr_nope", f->customer, DAY0,
                                     DAY0 + 86400, TG_WINDOW_NONE, 10, 0, 0, &f->a, &rows, &n,
                                     &more, &e2),
                     TG_ENOTFOUND);
}

static void test_one_active_meter_per_event_name(void **state)
{
    fixture *f = *state;
    tg_meter m1 = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);

    tg_meter spec, out;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.display_name, sizeof spec.display_name, "Second");
    snprintf(spec.event_name, sizeof spec.event_name, "api_call");
    snprintf(spec.customer_key, sizeof spec.customer_key, "stripe_customer_id");
    snprintf(spec.value_key, sizeof spec.value_key, "value");
    tg_err err = {0};
    assert_int_equal(tg_meter_create(f->svc, &f->scope, &spec, &out, &err), TG_EEXISTS);
    assert_string_equal(err.param, "event_name");

    assert_int_equal(record1(f, "api_call", "ev-1", "1", T0), TG_OK);

    tg_err e2 = {0};
    assert_int_equal(tg_meter_set_active(f->svc, &f->scope, m1.id, false, &out, &e2), TG_OK);
    assert_false(out.active);
    assert_int_equal(out.deactivated_at, T0);
    tg_meter got;
    assert_int_equal(tg_meter_retrieve(f->svc, &f->scope, m1.id, &got, &e2), TG_OK);
    assert_false(got.active);

    assert_int_equal(record1(f, "api_call", "ev-2", "1", T0), TG_EARCHIVED);

    /* a new meter may take the name now, and events go to it */
    tg_meter m2 = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);
    assert_string_not_equal(m1.id, m2.id);
    ev x;
    ev_init(&x, "api_call", "ev-3", f->customer, "2", T0);
    tg_err e3 = {0};
    assert_int_equal(tg_event_prepare(f->svc, &f->scope, &x.e, NULL, &e3), TG_OK);
    assert_string_equal(x.e.meter_id, m2.id);

    /* and the old one cannot be reactivated while m2 is active */
    tg_err e4 = {0};
    assert_int_equal(tg_meter_set_active(f->svc, &f->scope, m1.id, true, &out, &e4),
                     TG_EEXISTS);
}

static void test_scopes_and_customer_pages(void **state)
{
    fixture *f = *state;
    create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);

    /* the live mode of the same account sees neither the meter nor the customer */
    tg_scope live = f->scope;
    live.livemode = true;
    ev x;
    ev_init(&x, "api_call", "ev-1", f->customer, "1", T0);
    tg_err err = {0};
    assert_int_equal(tg_event_prepare(f->svc, &live, &x.e, NULL, &err), TG_ENOMETER);
    tg_customer c;
    tg_err e2 = {0};
    assert_int_equal(tg_customer_retrieve(f->svc, &live, f->customer, &f->a, &c, &e2),
                     TG_ENOTFOUND);

    /* customers list newest first with has_more and both cursors */
    char ids[5][TG_ID_MAX];
    snprintf(ids[0], sizeof ids[0], "%s", f->customer);
    for (int i = 1; i < 5; i++) {
        tg_customer_patch p;
        memset(&p, 0, sizeof p);
        assert_int_equal(tg_customer_create(f->svc, &f->scope, &p, &f->a, &c, &err), TG_OK);
        snprintf(ids[i], sizeof ids[i], "%s", c.id);
    }
    const struct {
        int limit;
        int after, before; /* index into ids, -1 = none */
        int want[5];
        size_t nwant;
        bool more;
    } cases[] = {
        {10, -1, -1, {4, 3, 2, 1, 0}, 5, false},
        {2, -1, -1, {4, 3}, 2, true},
        {2, 3, -1, {2, 1}, 2, true},
        {2, 1, -1, {0}, 1, false},
        {2, -1, 0, {2, 1}, 2, true},
        {2, -1, 2, {4, 3}, 2, false},
        {10, -1, 4, {0}, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_page page = {.limit = cases[i].limit,
                        .starting_after = cases[i].after >= 0 ? ids[cases[i].after] : NULL,
                        .ending_before = cases[i].before >= 0 ? ids[cases[i].before] : NULL};
        tg_customer *rows = NULL;
        size_t n = 99;
        bool more = !cases[i].more;
        assert_int_equal(
            tg_customer_list(f->svc, &f->scope, NULL, &page, &f->a, &rows, &n, &more, &err), TG_OK);
        if (n != cases[i].nwant || more != cases[i].more)
            fail_msg("customer page %zu: %zu rows has_more %d", i, n, more);
        for (size_t k = 0; k < n; k++)
            assert_string_equal(rows[k].id, ids[cases[i].want[k]]);
    }
}

typedef struct claim_arg {
    fixture *f;
    const char *key, *hash;
    int rc;
    bool replay;
} claim_arg;

static void *claim_thread(void *p)
{
    claim_arg *c = p;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_idem stored;
    memset(&stored, 0, sizeof stored);
    tg_err err = {0};
    c->rc = tg_idem_claim(c->f->svc, &c->f->scope, c->key, c->hash, &a, &c->replay, &stored,
                          &err);
    tg_arena_free(&a);
    return NULL;
}

static void test_idempotency_claims(void **state)
{
    fixture *f = *state;
    char h1[65], h2[65];
    tg_sha256_hex("request one", 11, h1);
    tg_sha256_hex("request two", 11, h2);
    tg_idem stored;
    memset(&stored, 0, sizeof stored);
    bool replay = true;
    tg_err err = {0};

    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-1", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    assert_false(replay);

    /* a concurrent twin while the first runs */
    claim_arg twin = {f, "key-1", h1, 99, true};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, claim_thread, &twin), 0);
    pthread_join(t, NULL);
    assert_int_equal(twin.rc, TG_EIDEMBUSY);

    const char *body = "{\"id\":\"cus_x\"}";
    tg_idem_finish(f->svc, &f->scope, "key-1", h1, 200, body, strlen(body), true);

    replay = false;
    tg_err e2 = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-1", h1, &f->a, &replay, &stored, &e2),
                     TG_OK);
    assert_true(replay);
    assert_int_equal(stored.status, 200);
    assert_int_equal(stored.body_len, strlen(body));
    assert_memory_equal(stored.body, body, strlen(body));

    tg_err e3 = {0};
    replay = true;
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-1", h2, &f->a, &replay, &stored, &e3),
                     TG_EIDEMMISMATCH);
    assert_false(replay);

    /* the same key in another mode is another key */
    tg_scope live = f->scope;
    live.livemode = true;
    tg_err e4 = {0};
    assert_int_equal(tg_idem_claim(f->svc, &live, "key-1", h2, &f->a, &replay, &stored, &e4),
                     TG_OK);
    assert_false(replay);
    tg_idem_finish(f->svc, &live, "key-1", h2, 0, NULL, 0, false);

    /* a claim released without storing lets the next request run */
    tg_err e5 = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-2", h1, &f->a, &replay, &stored, &e5),
                     TG_OK);
    assert_false(replay);
    tg_idem_finish(f->svc, &f->scope, "key-2", h1, 400, "{}", 2, false);
    tg_err e6 = {0};
    replay = true;
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-2", h2, &f->a, &replay, &stored, &e6),
                     TG_OK);
    assert_false(replay);
    tg_idem_finish(f->svc, &f->scope, "key-2", h2, 0, NULL, 0, false);
}

/* A write under a bound key commits a record of itself: after a crash before the response is
 * stored (here: no tg_idem_finish, then a reopen), the claim reports the writes as done and
 * names the object they created, and holds the key until the caller finishes. A failed write
 * leaves no record. Only the first id of the mark's exact kind is noted. */
static void test_idempotency_record_commits_with_the_writes(void **state)
{
    fixture *f = *state;
    char h1[65];
    tg_sha256_hex("create", 6, h1);
    tg_idem stored;
    memset(&stored, 0, sizeof stored);
    bool replay = true;
    tg_err err = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-w", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    assert_false(replay);
    tg_idem_mark mark = {.keyed = true, .scope = f->scope, .created_prefix = "cus_"};
    snprintf(mark.key, sizeof mark.key, "key-w");
    snprintf(mark.request_hash, sizeof mark.request_hash, "%s", h1);
    tg_idem_bind(&mark);
    tg_meter m = create_meter(f, "bound_call", TG_FORMULA_SUM, TG_WINDOW_NONE); /* not cus_ */
    tg_customer_patch p;
    memset(&p, 0, sizeof p);
    tg_customer c1, c2;
    assert_int_equal(tg_customer_create(f->svc, &f->scope, &p, &f->a, &c1, &err), TG_OK);
    assert_int_equal(tg_customer_create(f->svc, &f->scope, &p, &f->a, &c2, &err), TG_OK);
    tg_idem_bind(NULL);
    assert_string_equal(mark.created, c1.id);
    assert_string_not_equal(m.id, c1.id);

    /* the server stops before the response is stored */
    tg_service_close(f->svc);
    f->svc = NULL;
    assert_int_equal(open_service(f), TG_OK);
    replay = false;
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-w", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    assert_true(replay);
    assert_int_equal(stored.status, TG_IDEM_COMMITTED);
    assert_int_equal(stored.body_len, strlen(c1.id));
    assert_memory_equal(stored.body, c1.id, strlen(c1.id));
    claim_arg twin = {f, "key-w", h1, 99, true};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, claim_thread, &twin), 0);
    pthread_join(t, NULL);
    assert_int_equal(twin.rc, TG_EIDEMBUSY); /* the claim is held while the caller answers */
    const char *body = "{\"id\":\"cus\"}";
    tg_idem_finish(f->svc, &f->scope, "key-w", h1, 200, body, strlen(body), true);
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-w", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    assert_true(replay);
    assert_int_equal(stored.status, 200);
    assert_memory_equal(stored.body, body, strlen(body));

    /* a failed write records nothing */
    tg_idem_mark failed = {.keyed = true, .scope = f->scope, .created_prefix = "cus_"};
    snprintf(failed.key, sizeof failed.key, "key-f");
    snprintf(failed.request_hash, sizeof failed.request_hash, "%s", h1);
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-f", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    tg_idem_bind(&failed);
    tg_err e2 = {0};
    assert_int_equal(tg_customer_update(f->svc, &f->scope, "cus_missing", &p, &f->a, &c2, &e2),
                     TG_ENOTFOUND);
    tg_idem_bind(NULL);
    tg_idem_finish(f->svc, &f->scope, "key-f", h1, 404, "{}", 2, false);
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-f", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    assert_false(replay);
    tg_idem_finish(f->svc, &f->scope, "key-f", h1, 0, NULL, 0, false);

    /* the kind is exact, and the first id of it wins */
    tg_idem_mark kind = {.keyed = true, .created_prefix = "sub_"};
    tg_idem_bind(&kind);
    tg_idem_note_id("sub_sched_AbC");
    assert_string_equal(kind.created, "");
    tg_idem_note_id("sub_AbC");
    tg_idem_note_id("sub_DeF");
    tg_idem_bind(NULL);
    tg_idem_note_id("sub_GhI"); /* unbound: noted nowhere */
    assert_string_equal(kind.created, "sub_AbC");

    /* a product created with an id of the caller's choosing is noted as it is */
    tg_idem_mark chosen = {.keyed = true, .scope = f->scope, .created_prefix = "prod_"};
    snprintf(chosen.key, sizeof chosen.key, "key-p");
    snprintf(chosen.request_hash, sizeof chosen.request_hash, "%s", h1);
    tg_product_patch pp;
    memset(&pp, 0, sizeof pp);
    pp.id = "my-plan";
    pp.name = (tg_opt_str){.set = true, .value = "Plan"};
    pp.active = -1;
    tg_product prod;
    tg_idem_bind(&chosen);
    assert_int_equal(tg_product_create(f->svc, &f->scope, &pp, &f->a, &prod, &err), TG_OK);
    tg_idem_bind(NULL);
    assert_string_equal(chosen.created, "my-plan");
}

static void test_reopen_persists(void **state)
{
    fixture *f = *state;
    tg_meter m = create_meter(f, "api_call", TG_FORMULA_SUM, TG_WINDOW_NONE);
    assert_int_equal(record1(f, "api_call", "ev-1", "0.1", T0 - 600), TG_OK);
    assert_int_equal(record1(f, "api_call", "ev-2", "0.2", T0 - 300), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.3"));

    char h1[65];
    tg_sha256_hex("r", 1, h1);
    tg_idem stored;
    memset(&stored, 0, sizeof stored);
    bool replay = true;
    tg_err err = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-p", h1, &f->a, &replay, &stored, &err),
                     TG_OK);
    tg_idem_finish(f->svc, &f->scope, "key-p", h1, 201, "{\"ok\":true}", 11, true);

    char secret[TG_ID_MAX];
    assert_int_equal(tg_key_create(f->svc, true, secret, &err), TG_OK);
    assert_int_equal(strncmp(secret, "sk_live_", 8), 0);

    /* close drains the writer; reopen on the same directory */
    tg_service_close(f->svc);
    f->svc = NULL;
    set_now(f, T0 + 60);
    assert_int_equal(open_service(f), TG_OK);

    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.3"));
    tg_meter got;
    assert_int_equal(tg_meter_retrieve(f->svc, &f->scope, m.id, &got, &err), TG_OK);
    assert_true(got.active);
    assert_string_equal(got.event_name, "api_call");
    /* the registry is reloaded: events still validate, identifiers are still taken */
    assert_int_equal(record1(f, "api_call", "ev-1", "5", T0), TG_EDUPLICATE);
    assert_int_equal(record1(f, "api_call", "ev-3", "0.4", T0), TG_OK);
    assert_dec_equal(total(f, m.id, DAY0, DAY0 + 86400), D("0.7"));

    /* the stored idempotent response replays from storage */
    replay = false;
    tg_err e2 = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-p", h1, &f->a, &replay, &stored, &e2),
                     TG_OK);
    assert_true(replay);
    assert_int_equal(stored.status, 201);
    assert_int_equal(stored.body_len, 11);
    assert_memory_equal(stored.body, "{\"ok\":true}", 11);
    char h2[65];
    tg_sha256_hex("other", 5, h2);
    tg_err e3 = {0};
    assert_int_equal(tg_idem_claim(f->svc, &f->scope, "key-p", h2, &f->a, &replay, &stored, &e3),
                     TG_EIDEMMISMATCH);

    /* keys and customers survive too */
    tg_scope live;
    assert_int_equal(tg_key_authenticate(f->svc, secret, &live, &err), TG_OK);
    assert_true(live.livemode);
    assert_string_equal(live.account, f->scope.account);
    tg_customer c;
    assert_int_equal(tg_customer_retrieve(f->svc, &f->scope, f->customer, &f->a, &c, &err),
                     TG_OK);
    tg_err e4 = {0};
    assert_int_equal(tg_key_authenticate(f->svc, "sk_test_nope", &live, &e4), TG_EAUTHINVALID);
}

/* A key revoked from outside the running service (the CLI) stops authenticating once its
 * cached resolution is TG_KEY_RECHECK_S old, and so do the meter event sessions it made;
 * other keys and their sessions, and sessions tied to no key, are unaffected; revoking twice,
 * or a key that never existed, is TG_ENOTFOUND. */
static void test_key_revocation(void **state)
{
    fixture *f = *state;
    char doomed[TG_ID_MAX], kept[TG_ID_MAX];
    tg_err err = {0};
    tg_scope scope;
    assert_int_equal(tg_key_create(f->svc, false, doomed, &err), TG_OK);
    assert_int_equal(tg_key_create(f->svc, false, kept, &err), TG_OK);
    assert_int_equal(tg_key_authenticate(f->svc, doomed, &scope, &err), TG_OK);
    assert_int_equal(tg_key_authenticate(f->svc, kept, &scope, &err), TG_OK);
    tg_session by_doomed, by_kept, by_none;
    assert_int_equal(tg_session_create(f->svc, &f->scope, doomed, &by_doomed, &err), TG_OK);
    assert_int_equal(tg_session_create(f->svc, &f->scope, kept, &by_kept, &err), TG_OK);
    assert_int_equal(tg_session_create(f->svc, &f->scope, NULL, &by_none, &err), TG_OK);
    assert_int_equal(tg_session_authenticate(f->svc, by_doomed.token, &scope, &err), TG_OK);

    /* Authenticated last, so no other key shares its cache slot now (the cache is
     * direct-mapped: two of these keys may land in one slot). */
    assert_int_equal(tg_key_authenticate(f->svc, doomed, &scope, &err), TG_OK);
    tg_store_factory store = tg_store_sqlite_factory(f->dir);
    assert_int_equal(tg_key_revoke_offline(store, &f->clock, doomed, &err), TG_OK);
    assert_int_equal(tg_key_authenticate(f->svc, doomed, &scope, &err), TG_OK); /* cached */
    set_now(f, T0 + TG_KEY_RECHECK_S);
    tg_err e2 = {0};
    assert_int_equal(tg_key_authenticate(f->svc, doomed, &scope, &e2), TG_EAUTHINVALID);
    assert_int_equal(tg_key_authenticate(f->svc, kept, &scope, &err), TG_OK);
    assert_string_equal(scope.account, f->scope.account);
    tg_err e5 = {0};
    assert_int_equal(tg_session_authenticate(f->svc, by_doomed.token, &scope, &e5), TG_ESESSION);
    assert_int_equal(tg_session_authenticate(f->svc, by_kept.token, &scope, &err), TG_OK);
    assert_int_equal(tg_session_authenticate(f->svc, by_none.token, &scope, &err), TG_OK);

    tg_err e3 = {0}, e4 = {0};
    assert_int_equal(tg_key_revoke_offline(store, &f->clock, doomed, &e3), TG_ENOTFOUND);
    assert_int_equal(tg_key_revoke_offline(store, &f->clock, "sk_test_never", &e4),
                     TG_ENOTFOUND);
}

/* ---------------------------------------------------------------- meter event sessions */

/* A session authenticates until its expiry and not from then on, whether its answer comes from
 * storage or from the credential cache (the second use of a token, and every use after a
 * restart's first); keys and sessions never stand in for each other. */
static void test_session_expiry_and_credential_kinds(void **state)
{
    fixture *f = *state;
    tg_session ses;
    tg_err err = {0};
    assert_int_equal(tg_session_create(f->svc, &f->scope, NULL, &ses, &err), TG_OK);
    assert_int_equal(ses.expires_at, T0 + 15 * 60);
    for (int use = 0; use < 3; use++) {
        tg_scope got;
        memset(&got, 0, sizeof got);
        assert_int_equal(tg_session_authenticate(f->svc, ses.token, &got, &err), TG_OK);
        assert_string_equal(got.account, f->scope.account);
        assert_int_equal(got.livemode, f->scope.livemode);
    }
    /* the last second before expiry, then the expiry itself (the cache looks a session up
     * again a second after it last did, so these come from storage too) */
    set_now(f, ses.expires_at - 1);
    tg_scope got;
    assert_int_equal(tg_session_authenticate(f->svc, ses.token, &got, &err), TG_OK);
    set_now(f, ses.expires_at);
    tg_err e1 = {0};
    assert_int_equal(tg_session_authenticate(f->svc, ses.token, &got, &e1), TG_ESESSION);

    /* the same rule from storage: a restart starts with empty caches */
    tg_session later;
    set_now(f, T0);
    assert_int_equal(tg_session_create(f->svc, &f->scope, NULL, &later, &err), TG_OK);
    tg_service_close(f->svc);
    f->svc = NULL;
    set_now(f, later.expires_at);
    assert_int_equal(open_service(f), TG_OK);
    tg_err e2 = {0};
    assert_int_equal(tg_session_authenticate(f->svc, later.token, &got, &e2), TG_ESESSION);
    set_now(f, later.expires_at - 1);
    assert_int_equal(tg_session_authenticate(f->svc, later.token, &got, &err), TG_OK);

    /* a token is never a key, a key never a token, though both are cached by the same hash */
    char secret[TG_ID_MAX];
    assert_int_equal(tg_key_create(f->svc, false, secret, &err), TG_OK);
    assert_int_equal(tg_key_authenticate(f->svc, secret, &got, &err), TG_OK);
    tg_err e3 = {0}, e4 = {0}, e5 = {0};
    assert_int_equal(tg_session_authenticate(f->svc, secret, &got, &e3), TG_ESESSION);
    assert_int_equal(tg_key_authenticate(f->svc, later.token, &got, &e4), TG_EAUTHINVALID);
    assert_int_equal(tg_session_authenticate(f->svc, "mes_tok_unknown", &got, &e5), TG_ESESSION);
}

/* ---------------------------------------------------------------- billing */

/* A licensed monthly price of product, per unit. */
static void create_monthly_price(fixture *f, const char *product, int64_t unit_amount,
                                 tg_price *out)
{
    tg_price ps;
    memset(&ps, 0, sizeof ps);
    ps.active = true;
    snprintf(ps.currency, sizeof ps.currency, "usd");
    snprintf(ps.product, sizeof ps.product, "%s", product);
    ps.recurring = true;
    ps.interval = TG_INTERVAL_MONTH;
    ps.interval_count = 1;
    ps.unit_amount_set = true;
    ps.pricing.scheme = TG_SCHEME_PER_UNIT;
    ps.pricing.unit_amount = tg_dec_from_int(unit_amount);
    tg_err err = {0};
    if (tg_price_create(f->svc, &f->scope, &ps, NULL, false, &f->a, out, &err))
        fail_msg("price: %s", err.msg);
}

/* Subscribes the customer to one of price. */
static void subscribe(fixture *f, const char *price, tg_subscription *out)
{
    tg_sub_params sp;
    memset(&sp, 0, sizeof sp);
    sp.anchor_day = sp.anchor_month = sp.anchor_hour = sp.anchor_minute = sp.anchor_second = -1;
    sp.trial_end_behavior = -1;
    sp.cancel_at_period_end = -1;
    sp.proration = -1;
    sp.send_invoice = -1;
    sp.customer = f->customer;
    sp.items[0].price = price;
    sp.nitems = 1;
    sp.has_items = true;
    tg_err err = {0};
    if (tg_subscription_create(f->svc, &f->scope, &sp, &f->a, out, &err))
        fail_msg("subscription: %s", err.msg);
}

/* Opens the service with cfg, gives the customer a card and makes a product called name. */
static void open_billing(fixture *f, const tg_service_config *cfg, const char *name,
                         tg_product *prod)
{
    tg_err err = {0};
    assert_int_equal(tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, cfg,
                                     &err),
                     TG_OK);
    tg_customer_patch cp;
    memset(&cp, 0, sizeof cp);
    cp.default_payment_method = (tg_opt_str){true, "pm_card_visa"};
    tg_customer cu;
    assert_int_equal(tg_customer_update(f->svc, &f->scope, f->customer, &cp, &f->a, &cu, &err),
                     TG_OK);
    tg_product_patch pp;
    memset(&pp, 0, sizeof pp);
    pp.name = (tg_opt_str){true, name};
    pp.active = -1;
    assert_int_equal(tg_product_create(f->svc, &f->scope, &pp, &f->a, prod, &err), TG_OK);
}

/* A request on a schedule whose next phase came due before the scheduler ran it: the
 * request's own catch-up starts the phase, which releases the schedule. Canceling it then
 * used to cancel the subscription and answer with the released schedule; it is refused as a
 * released schedule's cancel, like an update or a release, and the subscription goes on. */
static void test_schedule_request_after_its_phase_came_due(void **state)
{
    fixture *f = *state;
    tg_service_close(f->svc); /* no scheduler: the phase stays due until a request comes */
    tg_service_config cfg = {.readers = 2, .no_billing_scheduler = true};
    tg_err err = {0};
    tg_product prod;
    open_billing(f, &cfg, "Seats", &prod);
    tg_price a, b;
    create_monthly_price(f, prod.id, 1000, &a);
    create_monthly_price(f, prod.id, 3000, &b);
    tg_subscription sub;
    subscribe(f, a.id, &sub);
    tg_sub_schedule k;
    tg_schedule_params create = {.op = TG_SCHEDULE_CREATE};
    assert_int_equal(tg_subscription_schedule(f->svc, &f->scope, sub.id, &create, &f->a, &k,
                                              &err),
                     TG_OK);
    char sched[TG_ID_MAX];
    snprintf(sched, sizeof sched, "%s", k.id);
    tg_schedule_params plan = {.op = TG_SCHEDULE_UPDATE, .phases_set = true};
    plan.phase.set = true;
    plan.phase.nitems = 1;
    snprintf(plan.phase.items[0].price, sizeof plan.phase.items[0].price, "%s", b.id);
    plan.phase.items[0].quantity = 2;
    assert_int_equal(tg_subscription_schedule(f->svc, &f->scope, sched, &plan, &f->a, &k, &err),
                     TG_OK);

    __atomic_store_n(&f->now, sub.period_end + 3600, __ATOMIC_SEQ_CST);
    static const tg_schedule_op ops[] = {TG_SCHEDULE_CANCEL, TG_SCHEDULE_UPDATE,
                                         TG_SCHEDULE_RELEASE};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        tg_schedule_params p = {.op = ops[i], .invoice_now = true};
        tg_err refused = {0};
        assert_int_equal(tg_subscription_schedule(f->svc, &f->scope, sched, &p, &f->a, &k,
                                                  &refused),
                         TG_ESTATE);
        if (!strstr(refused.msg, "currently in the `released` status"))
            fail_msg("op %zu: %s", i, refused.msg);
    }
    tg_subscription now;
    assert_int_equal(tg_subscription_retrieve(f->svc, &f->scope, sub.id, &f->a, &now, &err),
                     TG_OK);
    assert_int_equal(now.status, TG_SUB_ACTIVE);
    assert_int_equal(now.nitems, 1);
}

/* A customer's stored grants rewritten as the build before start_minute wrote them (record
 * tags 1-5 only): the registry then sees start_minute 0. */
static void store_grants_without_start_minute(fixture *f)
{
    tg_store *st;
    tg_err err = {0};
    assert_int_equal(tg_store_sqlite_open(f->dir, &st, &err), TG_OK);
    tg_obj o;
    assert_int_equal(st->ops->obj_get(st, &f->scope, "entitlements", f->customer, &f->a, &o,
                                      &err),
                     TG_OK);
    tg_grant *g;
    size_t n;
    assert_int_equal(tg_grants_decode(o.body, o.len, &f->a, &g, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(g[0].start_minute, TG_GRANT_START_PREVIOUS);
    tg_buf b, grant, limit;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_buf_init(&grant, TG_RECORD_MAX);
    tg_buf_init(&limit, TG_RECORD_MAX);
    tg_rec_str(&limit, 1, g[0].limit.meter);
    tg_rec_dec(&limit, 2, g[0].limit.quantity);
    tg_rec_int(&limit, 3, g[0].limit.hard);
    tg_rec_str(&grant, 1, g[0].feature);
    tg_rec_str(&grant, 2, g[0].lookup_key);
    tg_rec_bytes(&grant, 3, limit.data, limit.len);
    tg_rec_int(&grant, 4, g[0].period_start);
    tg_rec_int(&grant, 5, g[0].period_end);
    tg_rec_bytes(&b, 1, grant.data, grant.len);
    o.body = b.data;
    o.len = b.len;
    assert_int_equal(st->ops->obj_put(st, &f->scope, &o, &err), TG_OK);
    tg_grant *back;
    assert_int_equal(tg_grants_decode(b.data, b.len, &f->a, &back, &n), 0);
    assert_int_equal(back[0].start_minute, 0);
    tg_buf_free(&limit);
    tg_buf_free(&grant);
    tg_buf_free(&b);
    st->ops->close(st);
}

/* A usage limit counts the minutes its period's invoice bills: a renewed period ending and
 * starting at hh:mm:30 leaves the minute holding the boundary to the period before. Grants
 * stored before that was recorded (an upgrade) are made again from the subscription when the
 * registry loads them, so the renewed period does not count that minute twice. */
static void test_limit_minutes_and_grants_stored_before(void **state)
{
    fixture *f = *state;
    tg_service_close(f->svc); /* no scheduler: the renewal runs when asked */
    tg_service_config cfg = {.readers = 2, .no_billing_scheduler = true};
    tg_err err = {0};
    __atomic_store_n(&f->now, T0 + 30, __ATOMIC_SEQ_CST);
    tg_product prod;
    open_billing(f, &cfg, "Tokens", &prod);
    tg_meter m = create_meter(f, "tokens", TG_FORMULA_SUM, TG_WINDOW_NONE);
    tg_price price;
    create_monthly_price(f, prod.id, 1000, &price);
    tg_metadata none = {0};
    tg_feature feat;
    assert_int_equal(tg_feature_create(f->svc, &f->scope, "Tokens", "tokens", &none, &f->a, &feat,
                                       &err),
                     TG_OK);
    tg_usage_limit limit = {.set = true, .quantity = tg_dec_from_int(1000), .hard = true};
    snprintf(limit.meter, sizeof limit.meter, "%s", m.id);
    tg_product_feature pf;
    assert_int_equal(tg_product_feature_attach(f->svc, &f->scope, prod.id, feat.id, &limit,
                                               &f->a, &pf, &err),
                     TG_OK);
    tg_subscription sub;
    subscribe(f, price.id, &sub);
    int64_t end = sub.period_end; /* hh:mm:30, as the start */
    assert_int_equal(end % 60, 30);

    __atomic_store_n(&f->now, end - 10, __ATOMIC_SEQ_CST);
    assert_int_equal(record1(f, "tokens", "last-seconds", "4", end - 10), TG_OK);
    tg_ent_check c;
    assert_int_equal(tg_entitlement_check(f->svc, &f->scope, f->customer, "tokens",
                                          tg_dec_from_int(1), &c, &err),
                     TG_OK);
    assert_true(c.used == tg_dec_from_int(4));

    __atomic_store_n(&f->now, end + 40, __ATOMIC_SEQ_CST);
    assert_true(tg_billing_run_due(f->svc, end + 40, &err) >= 1); /* the renewal */
    assert_int_equal(record1(f, "tokens", "next-minute", "8", end + 40), TG_OK);
    assert_int_equal(tg_entitlement_check(f->svc, &f->scope, f->customer, "tokens",
                                          tg_dec_from_int(1), &c, &err),
                     TG_OK);
    assert_int_equal(c.period_start, end);
    assert_true(c.used == tg_dec_from_int(8));

    tg_service_close(f->svc);
    f->svc = NULL;
    store_grants_without_start_minute(f);
    assert_int_equal(tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, &cfg,
                                     &err),
                     TG_OK);
    assert_int_equal(tg_entitlement_check(f->svc, &f->scope, f->customer, "tokens",
                                          tg_dec_from_int(1), &c, &err),
                     TG_OK);
    assert_true(c.used == tg_dec_from_int(8));
}

/* ---------------------------------------------------------------- usage sessions */

/* Subscribes the customer (with a payment method) to a product granting the unlimited
 * feature "calls"; sessions record on the meter call_seconds. */
static void subscribe_to_calls(fixture *f)
{
    create_meter(f, "call_seconds", TG_FORMULA_SUM, TG_WINDOW_NONE);
    tg_err err = {0};
    tg_customer_patch cp;
    memset(&cp, 0, sizeof cp);
    cp.default_payment_method = (tg_opt_str){true, "pm_card_visa"};
    tg_customer cu;
    if (tg_customer_update(f->svc, &f->scope, f->customer, &cp, &f->a, &cu, &err))
        fail_msg("customer: %s", err.msg);
    tg_product_patch pp;
    memset(&pp, 0, sizeof pp);
    pp.name = (tg_opt_str){true, "Calls"};
    pp.active = -1;
    tg_product prod;
    if (tg_product_create(f->svc, &f->scope, &pp, &f->a, &prod, &err))
        fail_msg("product: %s", err.msg);
    tg_price price;
    create_monthly_price(f, prod.id, 1000, &price);
    tg_metadata none = {0};
    tg_feature feat;
    if (tg_feature_create(f->svc, &f->scope, "Calls", "calls", &none, &f->a, &feat, &err))
        fail_msg("feature: %s", err.msg);
    tg_usage_limit nolimit = {0};
    tg_product_feature pf;
    if (tg_product_feature_attach(f->svc, &f->scope, prod.id, feat.id, &nolimit, &f->a, &pf,
                                  &err))
        fail_msg("attach: %s", err.msg);
    tg_subscription sub;
    subscribe(f, price.id, &sub);
}

static size_t registry_sessions(fixture *f)
{
    return tg_ent_registry_sessions(*tg_service_entitlements(f->svc));
}

static void start(fixture *f, int64_t timeout, tg_usage_session *out)
{
    tg_usage_session_params p;
    memset(&p, 0, sizeof p);
    p.customer = f->customer;
    p.feature = "calls";
    p.event_name = "call_seconds";
    p.heartbeat_timeout = timeout;
    tg_err err = {0};
    if (tg_usage_session_start(f->svc, &f->scope, &p, &f->a, out, &err))
        fail_msg("start: %s", err.msg);
    assert_int_equal(out->status, TG_USESS_ACTIVE);
}

static void beat(fixture *f, const char *id, bool end, tg_usage_session *out)
{
    tg_err err = {0};
    if (tg_usage_session_heartbeat(f->svc, &f->scope, id, end, &f->a, out, &err))
        fail_msg("heartbeat: %s", err.msg);
}

static void test_ended_sessions_leave_the_registry(void **state)
{
    fixture *f = *state;
    subscribe_to_calls(f);
    tg_usage_session s, e;
    for (int i = 0; i < 200; i++) {
        start(f, 30, &s);
        assert_int_equal(registry_sessions(f), 1);
        set_now(f, f->now + 5);
        beat(f, s.id, true, &e);
        assert_int_equal(e.status, TG_USESS_ENDED);
        assert_int_equal(e.recorded, 5);
        assert_int_equal(registry_sessions(f), 0);
    }
}

static void test_stopped_sessions_leave_the_registry(void **state)
{
    fixture *f = *state;
    subscribe_to_calls(f);
    int64_t t0 = f->now;
    tg_usage_session s, live;
    for (int i = 0; i < 50; i++)
        start(f, 10, &s);
    assert_int_equal(registry_sessions(f), 50);
    set_now(f, f->now + 11); /* every heartbeat stopped longer than its timeout ago */
    start(f, 60, &live);
    assert_int_equal(registry_sessions(f), 1);

    /* After a restart, loading the customer stores the stopped sessions as expired: they are
     * not in the registry, and a retrieve shows what is stored. */
    tg_service_close(f->svc);
    f->svc = NULL;
    assert_int_equal(open_service(f), TG_OK);
    tg_ent_check c;
    tg_err err = {0};
    if (tg_entitlement_check(f->svc, &f->scope, f->customer, "calls", 0, &c, &err))
        fail_msg("check: %s", err.msg);
    assert_true(c.entitled);
    assert_int_equal(registry_sessions(f), 1);
    tg_usage_session g;
    if (tg_usage_session_retrieve(f->svc, &f->scope, s.id, &f->a, &g, &err))
        fail_msg("retrieve: %s", err.msg);
    assert_int_equal(g.status, TG_USESS_EXPIRED);
    assert_int_equal(g.ended_at, t0);
    set_now(f, f->now + 10);
    beat(f, live.id, false, &g);
    assert_int_equal(g.status, TG_USESS_ACTIVE);
    assert_int_equal(g.recorded, 10);
    assert_int_equal(registry_sessions(f), 1);
}

/* API keys and idempotency keys are stored and compared as SHA-256 hex: known answers, and the
 * same answers from threads hashing at once (each has its own digest context). */
static void *sha256_worker(void *arg)
{
    int *bad = arg;
    char h[65];
    for (int i = 0; i < 2000; i++) {
        tg_sha256_hex("abc", 3, h);
        if (strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
            (*bad)++;
    }
    return NULL;
}

static void test_sha256_known_answers(void **state)
{
    (void)state;
    char h[65];
    tg_sha256_hex("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    tg_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tg_sha256_hex(two, strlen(two), h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    pthread_t t[4];
    int bad[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, sha256_worker, &bad[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(bad[i], 0);
    }
}

static void test_hmac_sha256_known_answers(void **state)
{
    (void)state;
    char h[65];
    const char *data = "what do ya want for nothing?"; /* RFC 4231, test case 2 */
    tg_hmac_sha256_hex("Jefe", 4, data, strlen(data), h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    unsigned char key[131]; /* test case 6: a key longer than the block */
    memset(key, 0xaa, sizeof key);
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    tg_hmac_sha256_hex(key, sizeof key, big, strlen(big), h);
    assert_string_equal(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_webhook_event_types(void **state)
{
    (void)state;
    const char *sent[] = {"invoice.paid", "product.created", "test_helpers.test_clock.ready",
                          "entitlements.active_entitlement_summary.updated"};
    for (size_t i = 0; i < sizeof sent / sizeof *sent; i++)
        assert_true(tg_webhook_event_type_known(sent[i]) && tg_webhook_event_type_valid(sent[i]));
    /* Stripe's, first and last of the table, accepted and never sent. */
    const char *stripe[] = {"*", "account.application.authorized", "charge.succeeded",
                            "treasury.received_debit.created"};
    for (size_t i = 0; i < sizeof stripe / sizeof *stripe; i++) {
        assert_true(tg_webhook_event_type_valid(stripe[i]));
        assert_false(tg_webhook_event_type_known(stripe[i]));
    }
    const char *bad[] = {"", "charge.succeded", "invoice", "invoice.paid ", "**", "a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(tg_webhook_event_type_valid(bad[i]));
}

static void test_webhook_retry_schedule(void **state)
{
    (void)state;
    int64_t live = 0;
    int n = 0;
    for (int k = 1; tg_webhook_retry_units(k, true) >= 0; k++, n++)
        live += tg_webhook_retry_units(k, true);
    assert_int_equal(n, 10);
    assert_int_equal(live, 3936); /* units of a minute: 65.6 hours, under three days */
    assert_int_equal(tg_webhook_retry_units(0, true), -1);
    assert_int_equal(tg_webhook_retry_units(1, false), 1);
    assert_int_equal(tg_webhook_retry_units(3, false), 30);
    assert_int_equal(tg_webhook_retry_units(4, false), -1);
}

/* A product named "Plan" (its product.created event queues deliveries); its patch in *pp. */
static tg_product plan_product(fixture *f, tg_product_patch *pp)
{
    tg_err err = {0};
    memset(pp, 0, sizeof *pp);
    pp->name = (tg_opt_str){.set = true, .value = "Plan"};
    pp->active = -1;
    tg_product prod;
    assert_int_equal(tg_product_create(f->svc, &f->scope, pp, &f->a, &prod, &err), TG_OK);
    return prod;
}

static tg_webhook_attempt *take(fixture *f, size_t *n)
{
    tg_webhook_attempt *at;
    tg_err err = {0};
    assert_int_equal(tg_webhook_take(f->svc, 16, &f->a, &at, n, &err), TG_OK);
    return at;
}

/* An event is queued for the enabled endpoints that take its type, in the transaction that
 * records it; a taken delivery is leased; failures come back on the schedule and test mode
 * gives up after three retries; a delivered one leaves the queue. */
static void test_webhook_queue(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    const char *created[] = {"product.created"}, *paid[] = {"invoice.paid"}, *all[] = {"*"};
    tg_webhook_patch p = {.url = "http://127.0.0.1:9/a", .events = created, .nevents = 1,
                          .disabled = -1};
    tg_webhook_endpoint ep, other, off;
    assert_int_equal(tg_webhook_endpoint_create(f->svc, &f->scope, &p, &f->a, &ep, &err), TG_OK);
    p.events = paid;
    assert_int_equal(tg_webhook_endpoint_create(f->svc, &f->scope, &p, &f->a, &other, &err),
                     TG_OK);
    p.events = all;
    p.disabled = 1;
    assert_int_equal(tg_webhook_endpoint_create(f->svc, &f->scope, &p, &f->a, &off, &err),
                     TG_OK);
    assert_true(off.disabled);
    assert_memory_equal(ep.secret, "whsec_", 6);
    assert_int_equal(strlen(ep.secret), 6 + 32);

    size_t n;
    take(f, &n);
    assert_int_equal(n, 0);
    tg_product_patch pp;
    tg_product prod = plan_product(f, &pp);

    tg_webhook_attempt *at = take(f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(at[0].endpoint.id, ep.id);
    assert_string_equal(at[0].endpoint.secret, ep.secret);
    assert_string_equal(at[0].event.type, "product.created");
    assert_string_equal(at[0].event.object.product.id, prod.id);
    assert_int_equal(at[0].event.pending_webhooks, 1);
    assert_int_equal(at[0].delivery.attempts, 0);
    size_t again;
    take(f, &again);
    assert_int_equal(again, 0); /* leased */

    int failed = TG_WEBHOOK_FAILED, delivered = TG_WEBHOOK_DELIVERED;
    int64_t t = T0;
    int64_t expect[] = {60, 300, 1800};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(tg_webhook_settle(f->svc, at, 1, &failed, &err), TG_OK);
        set_now(f, t + expect[k] - 1);
        take(f, &again);
        assert_int_equal(again, 0);
        t += expect[k];
        set_now(f, t);
        at = take(f, &n);
        assert_int_equal(n, 1);
        assert_int_equal(at[0].delivery.attempts, k + 1);
    }
    /* The fourth failure is the last in test mode. */
    assert_int_equal(tg_webhook_settle(f->svc, at, 1, &failed, &err), TG_OK);
    set_now(f, t + 86400);
    take(f, &n);
    assert_int_equal(n, 0);
    tg_billing_event got;
    assert_int_equal(tg_billing_event_retrieve(f->svc, &f->scope, at[0].event.id, &f->a, &got,
                                               &err), TG_OK);
    assert_int_equal(got.pending_webhooks, 0);

    /* A delivered attempt leaves the queue. */
    pp.name.value = "Plan 2";
    assert_int_equal(tg_product_update(f->svc, &f->scope, prod.id, &pp, &f->a, &prod, &err),
                     TG_OK);
    take(f, &n);
    assert_int_equal(n, 0); /* nobody takes product.updated */
    tg_webhook_patch up = {.events = all, .nevents = 1, .disabled = -1};
    assert_int_equal(tg_webhook_endpoint_update(f->svc, &f->scope, ep.id, &up, &f->a, &ep, &err),
                     TG_OK);
    pp.name.value = "Plan 3";
    assert_int_equal(tg_product_update(f->svc, &f->scope, prod.id, &pp, &f->a, &prod, &err),
                     TG_OK);
    at = take(f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(at[0].event.type, "product.updated");
    assert_int_equal(tg_webhook_settle(f->svc, at, 1, &delivered, &err), TG_OK);
    set_now(f, t + 2 * 86400);
    take(f, &n);
    assert_int_equal(n, 0);
}

/* A delivery whose sender never settles it (it died mid-post, or stopped) comes back when its
 * lease ends, and each take counts as an attempt: test mode drops it after four. */
static void test_webhook_unsettled_takes(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    const char *all[] = {"*"};
    tg_webhook_patch p = {.url = "http://127.0.0.1:9/a", .events = all, .nevents = 1,
                          .disabled = -1};
    tg_webhook_endpoint ep;
    assert_int_equal(tg_webhook_endpoint_create(f->svc, &f->scope, &p, &f->a, &ep, &err), TG_OK);
    tg_product_patch pp;
    plan_product(f, &pp);
    size_t n;
    int64_t t = T0;
    for (int k = 0; k < 4; k++) {
        tg_webhook_attempt *at = take(f, &n);
        assert_int_equal(n, 1);
        assert_int_equal(at[0].delivery.attempts, k);
        int unsettled = TG_WEBHOOK_UNSETTLED;
        assert_int_equal(tg_webhook_settle(f->svc, at, 1, &unsettled, &err), TG_OK);
        set_now(f, t + TG_WEBHOOK_LEASE - 1);
        take(f, &n);
        assert_int_equal(n, 0); /* still leased */
        t += TG_WEBHOOK_LEASE;
        set_now(f, t);
    }
    take(f, &n);
    assert_int_equal(n, 0); /* four attempts: the first and test mode's three retries */
}

/* A subscription as a version from before schedules had rows of their own saved it, with
 * the schedule it held (schedule "" for none): its record, and the row's columns, with the
 * " scheduled=1 " tag the last of those versions wrote when tagged (the earlier ones did
 * not). */
static void put_older_subscription(tg_store *st, const tg_scope *scope, tg_subscription *s,
                                   tg_sub_item *item, bool tagged, const char *price)
{
    memset(item, 0, sizeof *item);
    strcpy(item->id, "si_older");
    snprintf(item->price.id, sizeof item->price.id, "%s", price);
    strcpy(item->price.product, "prod_older");
    strcpy(item->price.currency, "usd");
    item->price.recurring = item->price.active = true;
    item->price.interval = TG_INTERVAL_MONTH;
    item->price.interval_count = 1;
    item->quantity = 1;
    item->created = s->created;
    strcpy(s->customer, "cus_older");
    strcpy(s->currency, "usd");
    s->interval = TG_INTERVAL_MONTH;
    s->interval_count = 1;
    s->start_date = s->billing_cycle_anchor = s->period_start = s->created;
    s->anchor_month = s->anchor_hour = s->anchor_minute = s->anchor_second = -1;
    s->items = item;
    s->nitems = 1;
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_subscription_encode(&b, s);
    const char *words[] = {"trialing", "active", "past_due", "canceled", "paused"};
    tg_obj o = {.kind = "subscription", .created = s->created, .customer = s->customer,
                .lookup = words[s->status], .active = s->status != TG_SUB_CANCELED,
                .due = s->status != TG_SUB_CANCELED ? s->period_end : 0,
                .tags = s->schedule[0] && tagged
                            ? " price=price_older product=prod_older item=si_older scheduled=1 "
                            : " price=price_older product=prod_older item=si_older ",
                .body = b.data, .len = b.len};
    strcpy(o.id, s->id);
    tg_err err = {0};
    assert_int_equal(st->ops->obj_put(st, scope, &o, &err), TG_OK);
    tg_buf_free(&b);
}

/* A data directory from before schedules had rows of their own: a subscription holds its
 * active schedule (named after it, with a next phase and metadata), another's schedule was
 * canceled with it, a third never had one. The first start gives each schedule a row, as those
 * versions showed it: both are retrieved and listed (newest subscription first, as then), the
 * active one can still be released (and is then kept), and a later start changes nothing. */
static void test_schedules_of_an_older_directory(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    snprintf(f->dir, sizeof f->dir, "/tmp/tg-service-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->now = T0;
    f->clock.now = fake_now;
    f->clock.ctx = &f->now;
    tg_arena_init(&f->a, 0);
    tg_scope scope = {.livemode = false};
    strcpy(scope.account, "acct_older");

    tg_store *st;
    tg_err err = {0};
    assert_int_equal(tg_store_sqlite_open(f->dir, &st, &err), TG_OK);
    assert_int_equal(st->ops->setting_put(st, "account_id", scope.account, &err), TG_OK);
    tg_customer cu;
    memset(&cu, 0, sizeof cu);
    strcpy(cu.id, "cus_older");
    cu.created = T0 - 90 * 86400;
    assert_int_equal(st->ops->customer_put(st, &scope, &cu, &err), TG_OK);
    tg_kv team = {"team", "a"};
    tg_subscription active, canceled, plain;
    tg_sub_item items[3];
    memset(&active, 0, sizeof active);
    strcpy(active.id, "sub_olderA");
    strcpy(active.schedule, "sub_sched_olderA");
    active.created = T0 - 40 * 86400;
    active.period_end = T0 + 20 * 86400;
    active.schedule_metadata = (tg_metadata){&team, 1};
    active.next_phase.set = true;
    active.next_phase.start = active.period_end;
    active.next_phase.nitems = 1;
    strcpy(active.next_phase.items[0].price, "price_next");
    active.next_phase.items[0].quantity = 2;
    active.status = TG_SUB_ACTIVE;
    put_older_subscription(st, &scope, &active, &items[0], true, "price_older");
    memset(&canceled, 0, sizeof canceled);
    strcpy(canceled.id, "sub_olderB");
    strcpy(canceled.schedule, "sub_sched_olderB");
    canceled.created = T0 - 30 * 86400;
    canceled.status = TG_SUB_CANCELED;
    canceled.canceled_at = canceled.ended_at = canceled.period_end = T0 - 86400;
    put_older_subscription(st, &scope, &canceled, &items[1], false, "price_older");
    memset(&plain, 0, sizeof plain);
    strcpy(plain.id, "sub_olderC");
    plain.created = T0 - 20 * 86400;
    plain.period_end = T0 + 10 * 86400;
    plain.status = TG_SUB_ACTIVE;
    put_older_subscription(st, &scope, &plain, &items[2], true, "price_older");
    st->ops->close(st);

    assert_int_equal(open_service(f), TG_OK);
    tg_sub_schedule k;
    assert_int_equal(tg_schedule_retrieve(f->svc, &scope, "sub_sched_olderA", &f->a, &k, &err),
                     TG_OK);
    assert_int_equal(k.status, TG_SCHED_ACTIVE);
    assert_string_equal(k.subscription, "sub_olderA");
    assert_int_equal(k.created, active.created);
    assert_true(k.sub.next_phase.set);
    assert_string_equal(k.sub.next_phase.items[0].price, "price_next");
    assert_int_equal(k.sub.schedule_metadata.n, 1);
    assert_int_equal(tg_schedule_retrieve(f->svc, &scope, "sub_sched_olderB", &f->a, &k, &err),
                     TG_OK);
    assert_int_equal(k.status, TG_SCHED_CANCELED);
    assert_int_equal(k.canceled_at, T0 - 86400);
    assert_string_equal(k.sub.id, "sub_olderB");
    tg_err missing = {0};
    assert_int_equal(tg_schedule_retrieve(f->svc, &scope, "sub_sched_olderC", &f->a, &k,
                                          &missing),
                     TG_ENOTFOUND);

    tg_schedule_filter all = {.customer = "cus_older"};
    tg_page page = {.limit = 10};
    tg_sub_schedule *list;
    size_t n;
    bool more;
    assert_int_equal(tg_schedule_list(f->svc, &scope, &all, &page, &f->a, &list, &n, &more,
                                      &err),
                     TG_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "sub_sched_olderB");
    assert_string_equal(list[1].id, "sub_sched_olderA");
    tg_schedule_filter canceled_then = {.customer = "cus_older",
                                        .canceled_at = {true, T0 - 86400, T0 - 86400}};
    assert_int_equal(tg_schedule_list(f->svc, &scope, &canceled_then, &page, &f->a, &list, &n,
                                      &more, &err),
                     TG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "sub_sched_olderB");

    /* The active one goes on as any schedule: released, it is kept as released. */
    tg_schedule_params release = {.op = TG_SCHEDULE_RELEASE};
    assert_int_equal(tg_subscription_schedule(f->svc, &scope, "sub_sched_olderA", &release,
                                              &f->a, &k, &err),
                     TG_OK);
    assert_int_equal(k.status, TG_SCHED_RELEASED);
    assert_int_equal(k.released_at, T0);
    tg_subscription s;
    assert_int_equal(tg_subscription_retrieve(f->svc, &scope, "sub_olderA", &f->a, &s, &err),
                     TG_OK);
    assert_string_equal(s.schedule, "");

    /* A later start leaves the rows as they are. */
    tg_service_close(f->svc);
    f->svc = NULL;
    assert_int_equal(open_service(f), TG_OK);
    assert_int_equal(tg_schedule_list(f->svc, &scope, &all, &page, &f->a, &list, &n, &more,
                                      &err),
                     TG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[1].status, TG_SCHED_RELEASED);
    assert_int_equal(list[0].status, TG_SCHED_CANCELED);

    /* An older binary run on the directory in between gave a subscription a schedule the old
     * way: the next start gives it its row, and it renews as any (its phase starts, which
     * releases it). */
    tg_service_close(f->svc);
    f->svc = NULL;
    assert_int_equal(tg_store_sqlite_open(f->dir, &st, &err), TG_OK);
    tg_subscription later;
    tg_sub_item later_item;
    memset(&later, 0, sizeof later);
    strcpy(later.id, "sub_olderD");
    strcpy(later.schedule, "sub_sched_olderD");
    later.created = T0 - 10 * 86400;
    later.period_end = T0 + 5 * 86400;
    later.status = TG_SUB_ACTIVE;
    put_older_subscription(st, &scope, &later, &later_item, false, "price_older");
    /* pages of subscriptions before and after it in the list (older and newer ones): the scan
     * reads them into a scratch arena it resets, and the row must not come from that memory */
    for (int i = 0; i < 300; i++) {
        tg_subscription filler;
        tg_sub_item filler_item;
        memset(&filler, 0, sizeof filler);
        snprintf(filler.id, sizeof filler.id, "sub_olderE%03d", i);
        filler.created = i < 150 ? T0 - 200 * 86400 - i : T0 - 9 * 86400 + i;
        filler.period_end = T0 + 5 * 86400;
        filler.status = TG_SUB_ACTIVE;
        put_older_subscription(st, &scope, &filler, &filler_item, false, "price_filler");
    }
    st->ops->close(st);
    assert_int_equal(open_service(f), TG_OK);
    assert_int_equal(tg_schedule_retrieve(f->svc, &scope, "sub_sched_olderD", &f->a, &k, &err),
                     TG_OK);
    assert_int_equal(k.status, TG_SCHED_ACTIVE);
    assert_string_equal(k.subscription, "sub_olderD");
    assert_int_equal(k.sub.nitems, 1);
    assert_string_equal(k.sub.items[0].price.id, "price_older");
    assert_string_equal(k.sub.id, "sub_olderD");
    assert_int_equal(tg_subscription_schedule(f->svc, &scope, "sub_sched_olderD", &release,
                                              &f->a, &k, &err),
                     TG_OK);
    assert_int_equal(k.status, TG_SCHED_RELEASED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_hmac_sha256_known_answers),
        cmocka_unit_test(test_webhook_retry_schedule),
        cmocka_unit_test(test_webhook_event_types),
        cmocka_unit_test_setup_teardown(test_webhook_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_unsettled_takes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_sum_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_memo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hour_window_keeps_latest_received, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_windowed_survivor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canceled_survivor_stays_canceled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hourly_grouping_and_cursors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_active_meter_per_event_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scopes_and_customer_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_record_commits_with_the_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry_and_credential_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_revocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ended_sessions_leave_the_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_sessions_leave_the_registry, setup,
                                        teardown),
        cmocka_unit_test_teardown(test_schedules_of_an_older_directory, teardown),
        cmocka_unit_test_setup_teardown(test_schedule_request_after_its_phase_came_due, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_limit_minutes_and_grants_stored_before, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
