/* test_store_sqlite.c -- a storage contract test for store/sqlite.h.
 *
 * The service relies on the store port's conventions (core/store.h): lists return at most
 * limit+1 rows newest first with cursors resolved in scope, event identifiers are unique per
 * scope (a second insert reports dup and writes nothing), a bucket with count 0 is deleted,
 * and savepoints undo only their own part of a transaction. These tests drive the SQLite
 * adapter directly in a fresh mkdtemp directory so a broken query or migration is caught
 * without the writer thread in the way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "core/metadata.h"
#include "store/sqlite.h"

typedef struct fixture {
    char dir[64];
    tg_store *s;
    tg_arena a;
} fixture;

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

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/tg-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    tg_err err = {0};
    if (tg_store_sqlite_open(f->dir, &f->s, &err) != TG_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        rm_dir(f->dir);
        free(f);
        return -1;
    }
    tg_arena_init(&f->a, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->s)
        f->s->ops->close(f->s);
    tg_arena_free(&f->a);
    rm_dir(f->dir);
    free(f);
    return 0;
}

static const tg_scope TEST = {"acct_1", false};
static const tg_scope LIVE = {"acct_1", true};
static const tg_scope OTHER = {"acct_2", false};

/* ---------------------------------------------------------------- open / migrations */

static int user_version(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/tollgate.db", dir);
    sqlite3 *db = NULL;
    int v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

static void test_open_twice_is_idempotent(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    assert_int_equal(f->s->ops->setting_put(f->s, "account_id", "acct_x", &err), TG_OK);
    int v1 = user_version(f->dir);
    assert_true(v1 >= 1);

    /* a second connection while the first is open */
    tg_store *s2 = NULL;
    assert_int_equal(tg_store_sqlite_open(f->dir, &s2, &err), TG_OK);
    char *value = NULL;
    assert_int_equal(s2->ops->setting_get(s2, "account_id", &f->a, &value, &err), TG_OK);
    assert_string_equal(value, "acct_x");
    s2->ops->close(s2);

    /* close everything and reopen: migrations do not run twice, data stays */
    f->s->ops->close(f->s);
    f->s = NULL;
    assert_int_equal(tg_store_sqlite_open(f->dir, &f->s, &err), TG_OK);
    assert_int_equal(user_version(f->dir), v1);
    value = NULL;
    assert_int_equal(f->s->ops->setting_get(f->s, "account_id", &f->a, &value, &err), TG_OK);
    assert_string_equal(value, "acct_x");
    assert_string_equal(f->s->ops->name, "sqlite");
}

static void test_open_bad_dir_fails(void **state)
{
    (void)state;
    tg_store *s = NULL;
    tg_err err = {0};
    assert_int_equal(tg_store_sqlite_open("/nonexistent/tollgate/dir", &s, &err), TG_ESTORE);
    assert_int_equal(err.code, TG_ESTORE);
    assert_null(s);
}

static void test_settings_and_keys(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    char *value = NULL;
    assert_int_equal(f->s->ops->setting_get(f->s, "nope", &f->a, &value, &err), TG_ENOTFOUND);
    tg_err e2 = {0};
    assert_int_equal(f->s->ops->setting_put(f->s, "k", "v1", &e2), TG_OK);
    assert_int_equal(f->s->ops->setting_put(f->s, "k", "v2", &e2), TG_OK);
    assert_int_equal(f->s->ops->setting_get(f->s, "k", &f->a, &value, &e2), TG_OK);
    assert_string_equal(value, "v2");

    assert_int_equal(f->s->ops->key_insert(f->s, "hash1", &LIVE, "sk_live_", 100, &e2), TG_OK);
    tg_scope got = {"", false};
    assert_int_equal(f->s->ops->key_lookup(f->s, "hash1", &got, &e2), TG_OK);
    assert_string_equal(got.account, "acct_1");
    assert_true(got.livemode);
    tg_err e3 = {0};
    assert_int_equal(f->s->ops->key_lookup(f->s, "hash2", &got, &e3), TG_EAUTHINVALID);
}

/* ---------------------------------------------------------------- customers */

static void put_customer(fixture *f, const tg_scope *scope, const char *id, int64_t created)
{
    tg_customer c;
    memset(&c, 0, sizeof c);
    snprintf(c.id, sizeof c.id, "%s", id);
    c.created = created;
    c.livemode = scope->livemode;
    tg_err err = {0};
    assert_int_equal(f->s->ops->customer_put(f->s, scope, &c, &err), TG_OK);
}

static void test_customer_put_get(void **state)
{
    fixture *f = *state;
    tg_kv md[] = {{"plan", "pro"}, {"region", "eu"}};
    tg_customer c;
    memset(&c, 0, sizeof c);
    snprintf(c.id, sizeof c.id, "cus_A");
    c.created = 1717243200;
    c.email = "a@example.com";
    c.name = NULL;
    c.description = "";
    c.metadata = (tg_metadata){md, 2};
    tg_err err = {0};
    assert_int_equal(f->s->ops->customer_put(f->s, &TEST, &c, &err), TG_OK);

    tg_customer got;
    assert_int_equal(f->s->ops->customer_get(f->s, &TEST, "cus_A", &f->a, &got, &err), TG_OK);
    assert_string_equal(got.id, "cus_A");
    assert_int_equal(got.created, 1717243200);
    assert_false(got.deleted);
    assert_false(got.livemode);
    assert_string_equal(got.email, "a@example.com");
    assert_null(got.name);
    assert_non_null(got.description);
    assert_string_equal(got.description, "");
    assert_int_equal(got.metadata.n, 2);
    assert_string_equal(tg_metadata_get(&got.metadata, "plan"), "pro");
    assert_string_equal(tg_metadata_get(&got.metadata, "region"), "eu");

    /* other scopes do not see it */
    tg_err e2 = {0};
    assert_int_equal(f->s->ops->customer_get(f->s, &LIVE, "cus_A", &f->a, &got, &e2),
                     TG_ENOTFOUND);
    tg_err e3 = {0};
    assert_int_equal(f->s->ops->customer_get(f->s, &OTHER, "cus_A", &f->a, &got, &e3),
                     TG_ENOTFOUND);

    /* put replaces the row */
    c.email = NULL;
    c.name = "Ada";
    c.metadata.n = 0;
    c.deleted = true;
    assert_int_equal(f->s->ops->customer_put(f->s, &TEST, &c, &err), TG_OK);
    assert_int_equal(f->s->ops->customer_get(f->s, &TEST, "cus_A", &f->a, &got, &err), TG_OK);
    assert_null(got.email);
    assert_string_equal(got.name, "Ada");
    assert_int_equal(got.metadata.n, 0);
    assert_true(got.deleted);
}

static const char *ids_of(const tg_customer *c, size_t n, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < size; i++) {
        int k = snprintf(out + len, size - len, "%s%s", i ? "," : "", c[i].id);
        if (k > 0)
            len += (size_t)k;
    }
    return out;
}

static void test_customer_list_pages(void **state)
{
    fixture *f = *state;
    for (int i = 1; i <= 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "cus_%d", i);
        put_customer(f, &TEST, id, 1000 + i);
    }
    put_customer(f, &LIVE, "cus_live", 2000);
    put_customer(f, &OTHER, "cus_other", 2001);
    /* a deleted customer is not listed */
    tg_customer gone;
    memset(&gone, 0, sizeof gone);
    snprintf(gone.id, sizeof gone.id, "cus_gone");
    gone.deleted = true;
    tg_err err = {0};
    assert_int_equal(f->s->ops->customer_put(f->s, &TEST, &gone, &err), TG_OK);

    const struct {
        int limit;
        const char *after, *before;
        const char *want;
    } cases[] = {
        {10, NULL, NULL, "cus_5,cus_4,cus_3,cus_2,cus_1"},
        {2, NULL, NULL, "cus_5,cus_4,cus_3"}, /* limit + 1 rows */
        {5, NULL, NULL, "cus_5,cus_4,cus_3,cus_2,cus_1"},
        {4, NULL, NULL, "cus_5,cus_4,cus_3,cus_2,cus_1"},
        {2, "cus_4", NULL, "cus_3,cus_2,cus_1"},
        {2, "cus_2", NULL, "cus_1"},
        {2, "cus_1", NULL, ""},
        {10, NULL, "cus_1", "cus_5,cus_4,cus_3,cus_2"},
        /* ending_before: read from the cursor; the extra row is the newest, first */
        {2, NULL, "cus_1", "cus_4,cus_3,cus_2"},
        {2, NULL, "cus_4", "cus_5"},
        {2, NULL, "cus_5", ""},
        {1, NULL, "cus_2", "cus_4,cus_3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_page page = {.limit = cases[i].limit, .starting_after = cases[i].after,
                        .ending_before = cases[i].before};
        tg_customer *rows = NULL;
        size_t n = 99;
        tg_err e = {0};
        int rc = f->s->ops->customer_list(f->s, &TEST, NULL, &page, &f->a, &rows, &n, &e);
        if (rc != TG_OK)
            fail_msg("list case %zu: rc %d (%s)", i, rc, e.msg);
        char got[256];
        ids_of(rows, n, got, sizeof got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("list case %zu (limit %d after %s before %s):\n  got  %s\n  want %s", i,
                     cases[i].limit, cases[i].after ? cases[i].after : "-",
                     cases[i].before ? cases[i].before : "-", got, cases[i].want);
    }

    /* unknown cursors, and cursors from another scope */
    const struct {
        const char *after, *before, *param;
    } bad[] = {
        {"cus_nope", NULL, "starting_after"},
        {NULL, "cus_nope", "ending_before"},
        {"cus_live", NULL, "starting_after"},
        {NULL, "cus_other", "ending_before"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_page page = {.limit = 10, .starting_after = bad[i].after, .ending_before = bad[i].before};
        tg_customer *rows = NULL;
        size_t n = 0;
        tg_err e = {0};
        assert_int_equal(f->s->ops->customer_list(f->s, &TEST, NULL, &page, &f->a, &rows, &n, &e),
                         TG_ENOTFOUND);
        assert_string_equal(e.param, bad[i].param);
    }

    /* the live scope has its own list */
    tg_page page = {.limit = 10};
    tg_customer *rows = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->customer_list(f->s, &LIVE, NULL, &page, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].id, "cus_live");
    assert_true(rows[0].livemode);
}

/* ---------------------------------------------------------------- events */

static tg_event make_event(const char *identifier, int64_t ts, const char *value)
{
    tg_event e;
    memset(&e, 0, sizeof e);
    snprintf(e.identifier, sizeof e.identifier, "%s", identifier);
    snprintf(e.event_name, sizeof e.event_name, "api_call");
    snprintf(e.meter_id, sizeof e.meter_id, "mtr_1");
    snprintf(e.customer_id, sizeof e.customer_id, "cus_1");
    e.meter_seq = 1;
    e.customer_seq = 1;
    e.timestamp = ts;
    e.created = ts + 5;
    tg_dec_parse(value, strlen(value), &e.value);
    return e;
}

static void test_event_insert_dedupe(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    tg_kv payload[] = {{"stripe_customer_id", "cus_1"}, {"value", "2.5"}};
    tg_event e1 = make_event("ev-1", 1717243200, "2.5");
    e1.payload = (tg_metadata){payload, 2};
    bool dup = true;
    assert_int_equal(f->s->ops->event_insert(f->s, &TEST, &e1, &dup, &err), TG_OK);
    assert_false(dup);
    assert_true(e1.seq > 0);

    /* same identifier, same scope: dup, nothing written */
    tg_event e2 = make_event("ev-1", 1717243300, "9");
    e2.seq = -7;
    assert_int_equal(f->s->ops->event_insert(f->s, &TEST, &e2, &dup, &err), TG_OK);
    assert_true(dup);
    assert_int_equal(e2.seq, -7);

    /* same identifier in the other mode, or another account: not a dup */
    tg_event e3 = make_event("ev-1", 1717243200, "1");
    assert_int_equal(f->s->ops->event_insert(f->s, &LIVE, &e3, &dup, &err), TG_OK);
    assert_false(dup);
    assert_true(e3.seq > e1.seq);
    tg_event e4 = make_event("ev-1", 1717243200, "1");
    assert_int_equal(f->s->ops->event_insert(f->s, &OTHER, &e4, &dup, &err), TG_OK);
    assert_false(dup);

    /* the stored event is the first one */
    tg_event got;
    assert_int_equal(f->s->ops->event_get(f->s, &TEST, "ev-1", &f->a, &got, &err), TG_OK);
    assert_int_equal(got.seq, e1.seq);
    assert_int_equal(got.timestamp, 1717243200);
    assert_int_equal(got.created, 1717243205);
    assert_true(got.value == e1.value);
    assert_int_equal(got.state, TG_EVENT_COUNTED);
    assert_string_equal(got.meter_id, "mtr_1");
    assert_string_equal(got.customer_id, "cus_1");
    assert_string_equal(got.event_name, "api_call");
    assert_int_equal(got.payload.n, 2);
    assert_string_equal(tg_metadata_get(&got.payload, "value"), "2.5");

    tg_err e5 = {0};
    assert_int_equal(f->s->ops->event_get(f->s, &TEST, "ev-none", &f->a, &got, &e5),
                     TG_ENOTFOUND);

    /* state changes, and range reads only see counted events */
    tg_event e6 = make_event("ev-2", 1717243230, "-1.5");
    assert_int_equal(f->s->ops->event_insert(f->s, &TEST, &e6, &dup, &err), TG_OK);
    tg_event e7 = make_event("ev-3", 1717243260, "100"); /* next minute */
    assert_int_equal(f->s->ops->event_insert(f->s, &TEST, &e7, &dup, &err), TG_OK);
    bool changed = false;
    assert_int_equal(f->s->ops->event_set_state(f->s, &TEST, e6.seq, TG_EVENT_COUNTED,
                                                TG_EVENT_CANCELED, &changed, &err),
                     TG_OK);
    assert_true(changed);
    assert_int_equal(f->s->ops->event_get(f->s, &TEST, "ev-2", &f->a, &got, &err), TG_OK);
    assert_int_equal(got.state, TG_EVENT_CANCELED);
    /* A transition from a state the event is not in changes nothing. */
    assert_int_equal(f->s->ops->event_set_state(f->s, &TEST, e6.seq, TG_EVENT_COUNTED,
                                                TG_EVENT_SUPERSEDED, &changed, &err),
                     TG_OK);
    assert_false(changed);
    assert_int_equal(f->s->ops->event_get(f->s, &TEST, "ev-2", &f->a, &got, &err), TG_OK);
    assert_int_equal(got.state, TG_EVENT_CANCELED);
}

typedef struct range_acc {
    size_t n;
    tg_dec sum;
} range_acc;

static int range_add(void *ctx, int64_t ts, int64_t seq, tg_dec value)
{
    range_acc *r = ctx;
    (void)ts;
    (void)seq;
    r->n++;
    r->sum += value;
    return 0;
}

static void test_event_each_in_range(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    bool dup;
    const struct {
        const char *id;
        int64_t ts;
        const char *v;
    } evs[] = {
        {"a", 1717243140, "1"},   /* previous minute */
        {"b", 1717243200, "0.1"}, /* minute start: included */
        {"c", 1717243259, "0.2"}, /* last second: included */
        {"d", 1717243260, "5"},   /* next minute: excluded */
        {"e", 1717243230, "7"},   /* canceled below */
    };
    int64_t seq_e = 0;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        tg_event e = make_event(evs[i].id, evs[i].ts, evs[i].v);
        assert_int_equal(f->s->ops->event_insert(f->s, &TEST, &e, &dup, &err), TG_OK);
        seq_e = e.seq;
    }
    bool changed = false;
    assert_int_equal(f->s->ops->event_set_state(f->s, &TEST, seq_e, TG_EVENT_COUNTED,
                                                TG_EVENT_SUPERSEDED, &changed, &err),
                     TG_OK);
    assert_true(changed);
    range_acc r = {0, 0};
    assert_int_equal(f->s->ops->event_each_in_range(f->s, 1, 1, 1717243200,
                                                    1717243260, range_add, &r, &err),
                     TG_OK);
    assert_int_equal(r.n, 2);
    tg_dec want;
    tg_dec_parse("0.3", 3, &want);
    assert_true(r.sum == want);
}

/* ---------------------------------------------------------------- buckets */

typedef struct minutes_acc {
    int64_t minutes[16];
    tg_dec sums[16];
    size_t n;
} minutes_acc;

static int minutes_add(void *ctx, const tg_bucket *b)
{
    minutes_acc *m = ctx;
    if (m->n < 16) {
        m->minutes[m->n] = b->minute;
        m->sums[m->n] = b->sum;
        m->n++;
    }
    return 0;
}

static tg_bucket bucket(int64_t minute, int64_t sum_units, int64_t count)
{
    tg_bucket b;
    memset(&b, 0, sizeof b);
    b.minute = minute;
    b.sum = (tg_dec)sum_units * TG_DEC_ONE;
    b.count = count;
    b.last_ts = minute + 1;
    b.last_seq = count;
    b.last_value = -(tg_dec)1;
    return b;
}

static void test_buckets(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    tg_bucket got;
    assert_int_equal(f->s->ops->bucket_get(f->s, 1, 1, 60, &got, &err),
                     TG_ENOTFOUND);

    for (int64_t m = 60; m <= 300; m += 60) {
        tg_bucket b = bucket(m, m / 60, 1);
        assert_int_equal(f->s->ops->bucket_put(f->s, 1, 1, &b, &err), TG_OK);
    }
    tg_bucket other = bucket(120, 99, 1);
    assert_int_equal(f->s->ops->bucket_put(f->s, 1, 2, &other, &err), TG_OK);
    assert_int_equal(f->s->ops->bucket_put(f->s, 2, 1, &other, &err), TG_OK);

    /* get returns every field */
    assert_int_equal(f->s->ops->bucket_get(f->s, 1, 1, 180, &got, &err),
                     TG_OK);
    assert_int_equal(got.minute, 180);
    assert_true(got.sum == (tg_dec)3 * TG_DEC_ONE);
    assert_int_equal(got.count, 1);
    assert_int_equal(got.last_ts, 181);
    assert_int_equal(got.last_seq, 1);
    assert_true(got.last_value == -1);

    /* upsert */
    tg_bucket upd = bucket(180, 30, 4);
    assert_int_equal(f->s->ops->bucket_put(f->s, 1, 1, &upd, &err), TG_OK);
    assert_int_equal(f->s->ops->bucket_get(f->s, 1, 1, 180, &got, &err),
                     TG_OK);
    assert_int_equal(got.count, 4);
    assert_true(got.sum == (tg_dec)30 * TG_DEC_ONE);

    /* each: [from, to), newest first, only this meter and customer */
    minutes_acc acc;
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->bucket_each(f->s, 1, 1, 120, 300, minutes_add,
                                            &acc, &err),
                     TG_OK);
    assert_int_equal(acc.n, 3);
    assert_int_equal(acc.minutes[0], 240);
    assert_int_equal(acc.minutes[1], 180);
    assert_int_equal(acc.minutes[2], 120);
    assert_true(acc.sums[1] == (tg_dec)30 * TG_DEC_ONE);

    /* count 0 deletes */
    tg_bucket zero = bucket(180, 0, 0);
    assert_int_equal(f->s->ops->bucket_put(f->s, 1, 1, &zero, &err), TG_OK);
    assert_int_equal(f->s->ops->bucket_get(f->s, 1, 1, 180, &got, &err),
                     TG_ENOTFOUND);
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->bucket_each(f->s, 1, 1, 0, 1000, minutes_add,
                                            &acc, &err),
                     TG_OK);
    assert_int_equal(acc.n, 4);
    assert_int_equal(acc.minutes[0], 300);
    assert_int_equal(acc.minutes[1], 240);
    assert_int_equal(acc.minutes[2], 120);
    assert_int_equal(acc.minutes[3], 60);
    /* deleting an absent bucket is fine */
    tg_bucket zero2 = bucket(9999960, 0, 0);
    assert_int_equal(f->s->ops->bucket_put(f->s, 1, 1, &zero2, &err), TG_OK);
}

typedef struct spill_acc {
    int n;
    int stop_at; /* return 7 after this many rows, when set */
    tg_spill rows[8];
    char data[8][16];
} spill_acc;

static int spill_add(void *ctx, const tg_spill *row)
{
    spill_acc *acc = ctx;
    assert_true(acc->n < 8);
    acc->rows[acc->n] = *row;
    if (row->data) {
        assert_true(row->len < sizeof acc->data[0]);
        memcpy(acc->data[acc->n], row->data, row->len);
        acc->data[acc->n][row->len] = '\0';
    }
    acc->n++;
    return acc->n == acc->stop_at ? 7 : 0;
}

static void spill_put(fixture *f, int shard, int64_t m, int64_t c, int64_t seq, const char *data)
{
    tg_err err = {0};
    tg_spill row = {shard, m, c, seq, seq * 10, seq * 100, data, strlen(data)};
    assert_int_equal(f->s->ops->spill_put(f->s, &row, &err), TG_OK);
}

static void test_spills(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    spill_put(f, 5, 1, 2, 8, "p12-8");
    spill_put(f, 5, 1, 2, 3, "p12-3");
    spill_put(f, 5, 1, 1, 9, "p11-9");
    spill_put(f, 6, 4, 4, 2, "p44-2");

    /* one pair: its rows in seq order, every field */
    spill_acc acc;
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->spill_each(f->s, 5, 1, 2, spill_add, &acc, &err), TG_OK);
    assert_int_equal(acc.n, 2);
    assert_string_equal(acc.data[0], "p12-3");
    assert_string_equal(acc.data[1], "p12-8");
    assert_int_equal(acc.rows[1].shard, 5);
    assert_int_equal(acc.rows[1].meter_seq, 1);
    assert_int_equal(acc.rows[1].customer_seq, 2);
    assert_int_equal(acc.rows[1].seq, 8);
    assert_int_equal(acc.rows[1].through_block, 80);
    assert_int_equal(acc.rows[1].through_cancel, 800);

    /* one shard: in key order, not the other shard's */
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->spill_each(f->s, 5, -1, -1, spill_add, &acc, &err), TG_OK);
    assert_int_equal(acc.n, 3);
    assert_string_equal(acc.data[0], "p11-9");
    assert_string_equal(acc.data[1], "p12-3");
    assert_string_equal(acc.data[2], "p12-8");

    /* every row, marks only */
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->spill_each(f->s, -1, -1, -1, spill_add, &acc, &err), TG_OK);
    assert_int_equal(acc.n, 4);
    for (int i = 0; i < 4; i++)
        assert_null(acc.rows[i].data);

    /* a callback's non-zero return stops the walk and is returned */
    memset(&acc, 0, sizeof acc);
    acc.stop_at = 1;
    assert_int_equal(f->s->ops->spill_each(f->s, 5, -1, -1, spill_add, &acc, &err), 7);
    assert_int_equal(acc.n, 1);

    /* the same key twice is refused */
    tg_spill dup = {5, 1, 2, 8, 0, 0, "x", 1};
    assert_int_equal(f->s->ops->spill_put(f->s, &dup, &err), TG_ESTORE);

    /* deleting a shard leaves the others */
    assert_int_equal(f->s->ops->spill_delete_shard(f->s, 5, &err), TG_OK);
    memset(&acc, 0, sizeof acc);
    assert_int_equal(f->s->ops->spill_each(f->s, -1, -1, -1, spill_add, &acc, &err), TG_OK);
    assert_int_equal(acc.n, 1);
    assert_int_equal(acc.rows[0].shard, 6);
}

static void test_windows(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    int64_t seq = 0, ts = 0;
    assert_int_equal(
        f->s->ops->window_get(f->s, 1, 1, 3600, &seq, &ts, &err),
        TG_ENOTFOUND);
    assert_int_equal(f->s->ops->window_put(f->s, 1, 1, 3600, 5, 3700, &err),
                     TG_OK);
    assert_int_equal(f->s->ops->window_put(f->s, 1, 1, 3600, 8, 3650, &err),
                     TG_OK);
    assert_int_equal(
        f->s->ops->window_get(f->s, 1, 1, 3600, &seq, &ts, &err), TG_OK);
    assert_int_equal(seq, 8);
    assert_int_equal(ts, 3650);
}

/* ---------------------------------------------------------------- webhook deliveries */

static tg_delivery delivery(const char *endpoint, const char *event, int64_t due)
{
    tg_delivery d = {.attempts = 0, .created = 100, .due = due};
    snprintf(d.endpoint, sizeof d.endpoint, "%s", endpoint);
    snprintf(d.event, sizeof d.event, "%s", event);
    return d;
}

/* The queue is due-ordered across scopes, moves and drops one row at a time, drops an
 * endpoint's rows in its scope only, and counts an event's rows in its scope. */
static void test_webhook_deliveries(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    tg_delivery a = delivery("we_1", "evt_1", 200), b = delivery("we_2", "evt_1", 150),
                c = delivery("we_1", "evt_2", 300), d = delivery("we_1", "evt_1", 120);
    assert_int_equal(f->s->ops->delivery_add(f->s, &TEST, &a, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_add(f->s, &TEST, &b, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_add(f->s, &TEST, &c, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_add(f->s, &LIVE, &d, &err), TG_OK);
    assert_true(a.seq && b.seq > a.seq && c.seq > b.seq && d.seq > c.seq);

    tg_delivery *rows;
    size_t n;
    assert_int_equal(f->s->ops->delivery_due(f->s, 250, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 3); /* c is not due yet */
    assert_int_equal(rows[0].seq, d.seq);
    assert_true(rows[0].scope.livemode);
    assert_string_equal(rows[0].scope.account, "acct_1");
    assert_int_equal(rows[1].seq, b.seq);
    assert_string_equal(rows[1].endpoint, "we_2");
    assert_int_equal(rows[2].seq, a.seq);
    assert_string_equal(rows[2].event, "evt_1");
    assert_int_equal(rows[2].due, 200);
    assert_int_equal(rows[2].created, 100);
    assert_int_equal(f->s->ops->delivery_due(f->s, 250, 1, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 1);

    assert_int_equal(f->s->ops->delivery_set(f->s, a.seq, 2, 1000, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_due(f->s, 999, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rows[2].seq, c.seq);
    assert_int_equal(f->s->ops->delivery_due(f->s, 1000, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(rows[3].seq, a.seq);
    assert_int_equal(rows[3].attempts, 2);

    int count = -1;
    assert_int_equal(f->s->ops->delivery_count(f->s, &TEST, "evt_1", &count, &err), TG_OK);
    assert_int_equal(count, 2);
    assert_int_equal(f->s->ops->delivery_count(f->s, &LIVE, "evt_1", &count, &err), TG_OK);
    assert_int_equal(count, 1);
    assert_int_equal(f->s->ops->delivery_count(f->s, &OTHER, "evt_1", &count, &err), TG_OK);
    assert_int_equal(count, 0);

    /* we_1's rows in test mode go; the live one stays. */
    assert_int_equal(f->s->ops->delivery_delete(f->s, &TEST, 0, "we_1", &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_due(f->s, 1000, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].seq, d.seq);
    assert_int_equal(rows[1].seq, b.seq);
    /* One row, in its own scope only. */
    assert_int_equal(f->s->ops->delivery_delete(f->s, &TEST, d.seq, NULL, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_due(f->s, 1000, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->s->ops->delivery_delete(f->s, &LIVE, d.seq, NULL, &err), TG_OK);
    assert_int_equal(f->s->ops->delivery_due(f->s, 1000, 10, &f->a, &rows, &n, &err), TG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].seq, b.seq);
}

/* ---------------------------------------------------------------- idempotency */

static void test_idempotency(void **state)
{
    fixture *f = *state;
    tg_err err = {0};
    tg_idem got;
    memset(&got, 0, sizeof got);
    assert_int_equal(f->s->ops->idem_get(f->s, &TEST, "key-1", &f->a, &got, &err), TG_ENOTFOUND);

    tg_idem rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.request_hash, sizeof rec.request_hash, "%064d", 7);
    rec.status = 200;
    rec.body = "{\"id\":\"cus_1\"}";
    rec.body_len = strlen(rec.body);
    rec.created = 1717243200;
    assert_int_equal(f->s->ops->idem_put(f->s, &TEST, "key-1", &rec, &err), TG_OK);

    assert_int_equal(f->s->ops->idem_get(f->s, &TEST, "key-1", &f->a, &got, &err), TG_OK);
    assert_string_equal(got.request_hash, rec.request_hash);
    assert_int_equal(got.status, 200);
    assert_int_equal(got.body_len, rec.body_len);
    assert_memory_equal(got.body, rec.body, rec.body_len);
    assert_int_equal(got.created, 1717243200);

    /* keys are per scope */
    assert_int_equal(f->s->ops->idem_get(f->s, &LIVE, "key-1", &f->a, &got, &err), TG_ENOTFOUND);

    /* an empty body round-trips too */
    tg_idem empty = rec;
    empty.status = 400;
    empty.body = "";
    empty.body_len = 0;
    assert_int_equal(f->s->ops->idem_put(f->s, &TEST, "key-2", &empty, &err), TG_OK);
    assert_int_equal(f->s->ops->idem_get(f->s, &TEST, "key-2", &f->a, &got, &err), TG_OK);
    assert_int_equal(got.status, 400);
    assert_int_equal(got.body_len, 0);
    assert_string_equal(got.body, "");

    /* prune removes old records */
    assert_int_equal(f->s->ops->prune(f->s, 1717243201, 0, &err), TG_OK);
    assert_int_equal(f->s->ops->idem_get(f->s, &TEST, "key-1", &f->a, &got, &err), TG_ENOTFOUND);
}

/* ---------------------------------------------------------------- transactions */

static bool customer_exists(fixture *f, const char *id)
{
    tg_customer c;
    tg_err err = {0};
    int rc = f->s->ops->customer_get(f->s, &TEST, id, &f->a, &c, &err);
    assert_true(rc == TG_OK || rc == TG_ENOTFOUND);
    return rc == TG_OK;
}

static void test_transactions(void **state)
{
    fixture *f = *state;
    tg_err err = {0};

    /* rollback undoes everything */
    assert_int_equal(f->s->ops->begin(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_rolled_back", 1);
    assert_true(customer_exists(f, "cus_rolled_back"));
    f->s->ops->rollback(f->s);
    assert_false(customer_exists(f, "cus_rolled_back"));

    /* commit keeps everything */
    assert_int_equal(f->s->ops->begin(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_committed", 1);
    assert_int_equal(f->s->ops->commit(f->s, &err), TG_OK);
    assert_true(customer_exists(f, "cus_committed"));

    /* a savepoint rolled back undoes only its part */
    assert_int_equal(f->s->ops->begin(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_outer", 1);
    assert_int_equal(f->s->ops->savepoint(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_inner", 1);
    f->s->ops->rollback_to(f->s);
    assert_int_equal(f->s->ops->savepoint(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_released", 1);
    assert_int_equal(f->s->ops->release(f->s, &err), TG_OK);
    assert_int_equal(f->s->ops->commit(f->s, &err), TG_OK);
    assert_true(customer_exists(f, "cus_outer"));
    assert_false(customer_exists(f, "cus_inner"));
    assert_true(customer_exists(f, "cus_released"));

    /* a rolled-back transaction also undoes released savepoints */
    assert_int_equal(f->s->ops->begin(f->s, &err), TG_OK);
    assert_int_equal(f->s->ops->savepoint(f->s, &err), TG_OK);
    put_customer(f, &TEST, "cus_sp_then_rollback", 1);
    assert_int_equal(f->s->ops->release(f->s, &err), TG_OK);
    f->s->ops->rollback(f->s);
    assert_false(customer_exists(f, "cus_sp_then_rollback"));

    /* rollback outside a transaction is harmless */
    f->s->ops->rollback(f->s);
    assert_true(customer_exists(f, "cus_committed"));

    /* a committed transaction is visible to another connection */
    tg_store *s2 = NULL;
    assert_int_equal(tg_store_sqlite_open(f->dir, &s2, &err), TG_OK);
    tg_customer c;
    assert_int_equal(s2->ops->customer_get(s2, &TEST, "cus_outer", &f->a, &c, &err), TG_OK);
    tg_err e2 = {0};
    assert_int_equal(s2->ops->customer_get(s2, &TEST, "cus_inner", &f->a, &c, &e2),
                     TG_ENOTFOUND);
    s2->ops->close(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_twice_is_idempotent, setup, teardown),
        cmocka_unit_test(test_open_bad_dir_fails),
        cmocka_unit_test_setup_teardown(test_settings_and_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_customer_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_customer_list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_insert_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_each_in_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_deliveries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
