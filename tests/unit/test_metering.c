/* test_metering.c -- unit tests for core/metering.h and core/metadata.h.
 *
 * These are the pure rules of billing: which events a meter accepts (customer and value keys,
 * the [now - 35 days, now + 5 minutes] timestamp window, name lengths), how an event changes a
 * minute bucket under sum / count / last, how buckets merge into summaries, which summary
 * ranges are aligned, and the limits, patching and storage encoding of string maps. Boundaries
 * are tested on both sides, because an off-by-one here accepts or refuses billable usage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/metadata.h"
#include "core/metering.h"

#define DEC_MAX ((tg_dec)(((unsigned __int128)1 << 127) - 1))

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

/* ---------------------------------------------------------------- formulas and windows */

static void test_formula_and_window_names(void **state)
{
    (void)state;
    const struct {
        const char *s;
        int rc;
        tg_formula f;
    } fs[] = {
        {"sum", 0, TG_FORMULA_SUM},     {"count", 0, TG_FORMULA_COUNT},
        {"last", 0, TG_FORMULA_LAST},   {"Sum", -1, 0},
        {"", -1, 0},                    {"avg", -1, 0},
        {"sum ", -1, 0},
    };
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) {
        tg_formula f = (tg_formula)99;
        assert_int_equal(tg_formula_parse(fs[i].s, &f), fs[i].rc);
        if (!fs[i].rc) {
            assert_int_equal(f, fs[i].f);
            assert_string_equal(tg_formula_name(f), fs[i].s);
        }
    }
    const struct {
        const char *s;
        int rc;
        tg_window w;
    } ws[] = {
        {"hour", 0, TG_WINDOW_HOUR}, {"day", 0, TG_WINDOW_DAY}, {"minute", -1, 0},
        {"Hour", -1, 0},             {"", -1, 0},               {"none", -1, 0},
    };
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
        tg_window w = (tg_window)99;
        assert_int_equal(tg_window_parse(ws[i].s, &w), ws[i].rc);
        if (!ws[i].rc) {
            assert_int_equal(w, ws[i].w);
            assert_string_equal(tg_window_name(w), ws[i].s);
        }
    }
    assert_null(tg_window_name(TG_WINDOW_NONE));
    assert_int_equal(tg_window_seconds(TG_WINDOW_NONE), 60);
    assert_int_equal(tg_window_seconds(TG_WINDOW_HOUR), 3600);
    assert_int_equal(tg_window_seconds(TG_WINDOW_DAY), 86400);
}

static void test_window_start(void **state)
{
    (void)state;
    const struct {
        int64_t t, seconds, want;
    } cases[] = {
        {0, 60, 0},
        {59, 60, 0},
        {60, 60, 60},
        {61, 60, 60},
        {-1, 60, -60},
        {-59, 60, -60},
        {-60, 60, -60},
        {-61, 60, -120},
        {3599, 3600, 0},
        {3600, 3600, 3600},
        {-1, 3600, -3600},
        {-3600, 3600, -3600},
        {-3601, 3600, -7200},
        {-1, 86400, -86400},
        {-86400, 86400, -86400},
        {1717243199, 3600, 1717239600},
        {1717243200, 86400, 1717200000},
        {INT64_C(4102444799), 86400, INT64_C(4102358400)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = tg_window_start(cases[i].t, cases[i].seconds);
        if (got != cases[i].want)
            fail_msg("tg_window_start(%lld, %lld) = %lld, want %lld", (long long)cases[i].t,
                     (long long)cases[i].seconds, (long long)got, (long long)cases[i].want);
    }
}

/* ---------------------------------------------------------------- meter validation */

static tg_meter make_meter(tg_formula f, const char *cust_key, const char *value_key)
{
    tg_meter m;
    memset(&m, 0, sizeof m);
    snprintf(m.id, sizeof m.id, "mtr_test");
    snprintf(m.display_name, sizeof m.display_name, "API calls");
    snprintf(m.event_name, sizeof m.event_name, "api_call");
    snprintf(m.customer_key, sizeof m.customer_key, "%s", cust_key);
    snprintf(m.value_key, sizeof m.value_key, "%s", value_key);
    m.formula = f;
    m.active = true;
    return m;
}

static void test_meter_validate(void **state)
{
    (void)state;
    tg_meter m = make_meter(TG_FORMULA_SUM, "stripe_customer_id", "value");
    tg_err err = {0};
    assert_int_equal(tg_meter_validate(&m, &err), TG_OK);
    const struct {
        size_t off;
        const char *param;
    } fields[] = {
        {offsetof(tg_meter, display_name), "display_name"},
        {offsetof(tg_meter, event_name), "event_name"},
        {offsetof(tg_meter, customer_key), "customer_mapping[event_payload_key]"},
        {offsetof(tg_meter, value_key), "value_settings[event_payload_key]"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        tg_meter bad = m;
        ((char *)&bad)[fields[i].off] = '\0';
        tg_err e = {0};
        assert_int_equal(tg_meter_validate(&bad, &e), TG_EINVAL);
        assert_string_equal(e.param, fields[i].param);
    }
}

/* ---------------------------------------------------------------- event checks */

#define NOW INT64_C(1717243200)

typedef struct {
    tg_kv kv[4];
    tg_event e;
} event_fixture;

static void make_event(event_fixture *f, int64_t ts, const char *k1, const char *v1,
                       const char *k2, const char *v2)
{
    memset(f, 0, sizeof *f);
    size_t n = 0;
    if (k1)
        f->kv[n++] = (tg_kv){k1, v1};
    if (k2)
        f->kv[n++] = (tg_kv){k2, v2};
    f->e.payload.items = f->kv;
    f->e.payload.n = n;
    f->e.timestamp = ts;
    snprintf(f->e.event_name, sizeof f->e.event_name, "api_call");
    snprintf(f->e.identifier, sizeof f->e.identifier, "id-1");
}

static void test_event_check_accepts(void **state)
{
    (void)state;
    tg_meter m = make_meter(TG_FORMULA_SUM, "stripe_customer_id", "value");
    m.event_time_window = TG_WINDOW_HOUR;
    event_fixture f;
    make_event(&f, NOW - 10, "stripe_customer_id", "cus_123", "value", "2.5");
    tg_err err = {0};
    assert_int_equal(tg_event_check(&m, &f.e, NOW, &err), TG_OK);
    assert_string_equal(f.e.customer_id, "cus_123");
    assert_string_equal(f.e.meter_id, "mtr_test");
    assert_dec_equal(f.e.value, D("2.5"));
    assert_int_equal(f.e.window, TG_WINDOW_HOUR);
    assert_int_equal(err.code, TG_OK);
}

static void test_event_check_errors(void **state)
{
    (void)state;
    const struct {
        tg_formula formula;
        const char *ckey, *vkey;       /* meter keys */
        const char *k1, *v1, *k2, *v2; /* payload */
        int64_t ts;
        int code;
        const char *param;
    } cases[] = {
        /* customer key */
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "value", "1", NULL, NULL, NOW,
         TG_ENOCUSTKEY, "payload[stripe_customer_id]"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "", "value", "1",
         NOW, TG_ENOCUSTKEY, "payload[stripe_customer_id]"},
        {TG_FORMULA_COUNT, "stripe_customer_id", "value", NULL, NULL, NULL, NULL, NOW,
         TG_ENOCUSTKEY, "payload[stripe_customer_id]"},
        /* value key */
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", NULL,
         NULL, NOW, TG_ENOVALUE, "payload[value]"},
        {TG_FORMULA_LAST, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", NULL,
         NULL, NOW, TG_ENOVALUE, "payload[value]"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "abc", NOW, TG_EBADVALUE, "payload[value]"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "1e3", NOW, TG_EBADVALUE, "payload[value]"},
        {TG_FORMULA_LAST, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "0.0000000000001", NOW, TG_EBADVALUE, "payload[value]"},
        /* at most 15 significant digits (trailing fraction zeros and leading zeros do not
         * count; the integer part's trailing zeros do) */
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "1234567890123456", NOW, TG_EVALUEDIGITS, "payload[value]"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "1000000000000000", NOW, TG_EVALUEDIGITS, "payload[value]"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "-1234.567890123456", NOW, TG_EVALUEDIGITS, "payload[value]"},
        {TG_FORMULA_LAST, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "99999999999999999999999999", NOW, TG_EVALUEDIGITS, "payload[value]"},
        /* custom payload keys */
        {TG_FORMULA_SUM, "cust", "tokens", "stripe_customer_id", "cus_1", "value", "1", NOW,
         TG_ENOCUSTKEY, "payload[cust]"},
        {TG_FORMULA_SUM, "cust", "tokens", "cust", "cus_1", "value", "1", NOW, TG_ENOVALUE,
         "payload[tokens]"},
        {TG_FORMULA_SUM, "cust", "tokens", "cust", "cus_1", "tokens", "x", NOW, TG_EBADVALUE,
         "payload[tokens]"},
        /* timestamps */
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "1", NOW - 35 * 86400 - 1, TG_ETOOOLD, "timestamp"},
        {TG_FORMULA_SUM, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", "value",
         "1", NOW + 301, TG_EFUTURE, "timestamp"},
        {TG_FORMULA_COUNT, "stripe_customer_id", "value", "stripe_customer_id", "cus_1", NULL,
         NULL, 0, TG_ETOOOLD, "timestamp"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_meter m = make_meter(cases[i].formula, cases[i].ckey, cases[i].vkey);
        event_fixture f;
        make_event(&f, cases[i].ts, cases[i].k1, cases[i].v1, cases[i].k2, cases[i].v2);
        tg_err err = {0};
        int rc = tg_event_check(&m, &f.e, NOW, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].code, err.msg);
        assert_int_equal(err.code, cases[i].code);
        assert_string_equal(err.param, cases[i].param);
    }
}

static void test_event_check_boundaries(void **state)
{
    (void)state;
    const struct {
        tg_formula formula;
        int64_t ts;
        int code;
    } cases[] = {
        {TG_FORMULA_SUM, NOW - 35 * 86400, TG_OK},
        {TG_FORMULA_SUM, NOW - 35 * 86400 - 1, TG_ETOOOLD},
        {TG_FORMULA_SUM, NOW + 300, TG_OK},
        {TG_FORMULA_SUM, NOW + 301, TG_EFUTURE},
        {TG_FORMULA_SUM, NOW, TG_OK},
        {TG_FORMULA_COUNT, NOW - 35 * 86400, TG_OK},
        {TG_FORMULA_COUNT, NOW + 300, TG_OK},
        {TG_FORMULA_LAST, NOW + 301, TG_EFUTURE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_meter m = make_meter(cases[i].formula, "stripe_customer_id", "value");
        event_fixture f;
        make_event(&f, cases[i].ts, "stripe_customer_id", "cus_1", "value", "4");
        tg_err err = {0};
        int rc = tg_event_check(&m, &f.e, NOW, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu (ts now%+lld): rc %d, want %d", i, (long long)(cases[i].ts - NOW),
                     rc, cases[i].code);
    }
}

/* The most a value can have: 15 significant digits, counted as Stripe counts them. */
static void test_event_value_digits_accepted(void **state)
{
    (void)state;
    const char *ok[] = {"123456789012345", "-999999999999999", "12345678901234.5000000",
                        "0.000000000001", "123.456789012345", "00000000000000000007",
                        "999999999999999.000000000000", "-0", "0.000"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        tg_meter m = make_meter(TG_FORMULA_SUM, "stripe_customer_id", "value");
        event_fixture f;
        make_event(&f, NOW, "stripe_customer_id", "cus_1", "value", ok[i]);
        tg_err err = {0};
        if (tg_event_check(&m, &f.e, NOW, &err) != TG_OK)
            fail_msg("%s refused: %s", ok[i], err.msg);
    }
}

static void test_event_check_count_needs_no_value(void **state)
{
    (void)state;
    tg_meter m = make_meter(TG_FORMULA_COUNT, "stripe_customer_id", "value");
    event_fixture f;
    make_event(&f, NOW, "stripe_customer_id", "cus_9", NULL, NULL);
    tg_err err = {0};
    assert_int_equal(tg_event_check(&m, &f.e, NOW, &err), TG_OK);
    assert_dec_equal(f.e.value, TG_DEC_ONE);
    /* a junk value is not even read for count */
    make_event(&f, NOW, "stripe_customer_id", "cus_9", "value", "junk");
    tg_err err2 = {0};
    assert_int_equal(tg_event_check(&m, &f.e, NOW, &err2), TG_OK);
    assert_dec_equal(f.e.value, TG_DEC_ONE);
}

static void test_event_check_names(void **state)
{
    (void)state;
    char n100[101], n101[102];
    memset(n100, 'e', 100);
    n100[100] = '\0';
    memset(n101, 'e', 101);
    n101[101] = '\0';
    const struct {
        const char *name, *ident;
        int code;
        const char *param;
    } cases[] = {
        {"api_call", "id", TG_OK, ""},
        {"api_call", NULL, TG_OK, ""},
        {n100, n100, TG_OK, ""},
        {n101, "id", TG_EINVAL, "event_name"},
        {"api_call", n101, TG_EINVAL, "identifier"},
        {"api_call", "", TG_EINVAL, "identifier"},
        {"", "id", TG_EMISSING, "event_name"},
        {NULL, "id", TG_EMISSING, "event_name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_err err = {0};
        int rc = tg_event_check_names(cases[i].name, cases[i].ident, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].code);
        assert_string_equal(err.param, cases[i].param);
    }
}

/* ---------------------------------------------------------------- buckets */

static void test_bucket_sum_count(void **state)
{
    (void)state;
    tg_bucket b;
    memset(&b, 0, sizeof b);
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_SUM), 0);
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_COUNT), 0);
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_LAST), 0);

    assert_int_equal(tg_bucket_add(&b, 100, 1, D("0.1")), TG_OK);
    assert_int_equal(tg_bucket_add(&b, 101, 2, D("0.2")), TG_OK);
    assert_int_equal(tg_bucket_add(&b, 102, 3, D("-1.5")), TG_OK);
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_SUM), D("-1.2"));
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_COUNT), D("3"));
    assert_int_equal(b.count, 3);

    /* overflow is refused and leaves the bucket alone */
    tg_bucket big;
    memset(&big, 0, sizeof big);
    assert_int_equal(tg_bucket_add(&big, 1, 1, DEC_MAX), TG_OK);
    assert_int_not_equal(tg_bucket_add(&big, 2, 2, 1), TG_OK);
    assert_int_equal(big.count, 1);
    assert_true(big.sum == DEC_MAX);
    assert_int_equal(big.last_seq, 1);
}

static void test_bucket_last(void **state)
{
    (void)state;
    const struct {
        int64_t ts, seq;
        const char *value;
        const char *want_last; /* after this add */
    } steps[] = {
        {100, 1, "5", "5"},
        {90, 2, "7", "5"},   /* older timestamp, later seq: does not win */
        {100, 3, "9", "9"},  /* same timestamp, greater seq: wins */
        {100, 0, "11", "9"}, /* same timestamp, smaller seq: does not win */
        {101, 4, "-2", "-2"},
        {50, 99, "1", "-2"},
    };
    tg_bucket b;
    memset(&b, 0, sizeof b);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        assert_int_equal(tg_bucket_add(&b, steps[i].ts, steps[i].seq, D(steps[i].value)), TG_OK);
        char got[TG_DEC_STR_MAX];
        tg_dec_format(tg_bucket_value(&b, TG_FORMULA_LAST), got);
        if (strcmp(got, steps[i].want_last) != 0)
            fail_msg("step %zu: last = %s, want %s", i, got, steps[i].want_last);
    }
    assert_int_equal(b.last_ts, 101);
    assert_int_equal(b.last_seq, 4);
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_SUM), D("31"));
    assert_dec_equal(tg_bucket_value(&b, TG_FORMULA_COUNT), D("6"));
}

static tg_bucket bucket_of(int64_t minute, const char *sum, int64_t count, int64_t last_ts,
                           int64_t last_seq, const char *last_value)
{
    tg_bucket b;
    memset(&b, 0, sizeof b);
    b.minute = minute;
    b.sum = D(sum);
    b.count = count;
    b.last_ts = last_ts;
    b.last_seq = last_seq;
    b.last_value = D(last_value);
    return b;
}

static void test_bucket_merge(void **state)
{
    (void)state;
    const struct {
        tg_bucket into, from;
        const char *sum;
        int64_t count;
        int64_t last_ts, last_seq;
        const char *last;
    } cases[] = {
        /* from is later by timestamp */
        {bucket_of(0, "1", 1, 10, 5, "1"), bucket_of(60, "2", 2, 70, 1, "3"), "3", 3, 70, 1, "3"},
        /* from is older by timestamp although received later */
        {bucket_of(60, "1", 1, 70, 1, "1"), bucket_of(0, "2", 2, 10, 9, "3"), "3", 3, 70, 1, "1"},
        /* tie on timestamp: greater seq wins */
        {bucket_of(0, "1", 1, 10, 5, "1"), bucket_of(0, "2", 1, 10, 7, "2"), "3", 2, 10, 7, "2"},
        {bucket_of(0, "1", 1, 10, 7, "1"), bucket_of(0, "2", 1, 10, 5, "2"), "3", 2, 10, 7, "1"},
        /* into empty: takes from */
        {bucket_of(0, "0", 0, 0, 0, "0"), bucket_of(0, "4", 2, -5, 3, "4"), "4", 2, -5, 3, "4"},
        /* from empty: no change */
        {bucket_of(0, "4", 2, 10, 3, "4"), bucket_of(0, "0", 0, 99, 99, "0"), "4", 2, 10, 3, "4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_bucket into = cases[i].into;
        assert_int_equal(tg_bucket_merge(&into, &cases[i].from), TG_OK);
        char sum[TG_DEC_STR_MAX], last[TG_DEC_STR_MAX];
        tg_dec_format(tg_bucket_value(&into, TG_FORMULA_SUM), sum);
        tg_dec_format(tg_bucket_value(&into, TG_FORMULA_LAST), last);
        if (strcmp(sum, cases[i].sum) || into.count != cases[i].count ||
            into.last_ts != cases[i].last_ts || into.last_seq != cases[i].last_seq ||
            strcmp(last, cases[i].last))
            fail_msg("merge case %zu: sum %s count %lld last (%lld,%lld)=%s", i, sum,
                     (long long)into.count, (long long)into.last_ts, (long long)into.last_seq,
                     last);
    }

    /* overflow: refused, into untouched */
    tg_bucket a;
    memset(&a, 0, sizeof a);
    a.sum = DEC_MAX;
    a.count = 1;
    a.last_ts = 1;
    tg_bucket b = bucket_of(0, "1", 1, 5, 5, "1");
    assert_int_not_equal(tg_bucket_merge(&a, &b), TG_OK);
    assert_true(a.sum == DEC_MAX);
    assert_int_equal(a.count, 1);
    assert_int_equal(a.last_ts, 1);
}

/* Folding events minute by minute and merging must give what one bucket gives. */
static void test_bucket_merge_equals_single(void **state)
{
    (void)state;
    const struct {
        int64_t ts, seq;
        const char *v;
    } events[] = {
        {0, 1, "1.5"}, {30, 2, "2"}, {61, 3, "0.25"}, {61, 4, "7"}, {125, 5, "-1"}, {10, 6, "3"},
    };
    tg_bucket single, minutes[3], merged;
    memset(&single, 0, sizeof single);
    memset(minutes, 0, sizeof minutes);
    memset(&merged, 0, sizeof merged);
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        tg_dec v = D(events[i].v);
        assert_int_equal(tg_bucket_add(&single, events[i].ts, events[i].seq, v), TG_OK);
        assert_int_equal(
            tg_bucket_add(&minutes[events[i].ts / 60], events[i].ts, events[i].seq, v), TG_OK);
    }
    for (int i = 2; i >= 0; i--) /* newest first, as summaries read them */
        assert_int_equal(tg_bucket_merge(&merged, &minutes[i]), TG_OK);
    for (int f = TG_FORMULA_SUM; f <= TG_FORMULA_LAST; f++)
        assert_dec_equal(tg_bucket_value(&merged, (tg_formula)f),
                         tg_bucket_value(&single, (tg_formula)f));
    assert_dec_equal(tg_bucket_value(&merged, TG_FORMULA_LAST), D("-1"));
    assert_dec_equal(tg_bucket_value(&merged, TG_FORMULA_SUM), D("12.75"));
}

/* ---------------------------------------------------------------- summary ranges */

static void test_summary_check_range(void **state)
{
    (void)state;
    const struct {
        int64_t start, end;
        tg_window g;
        int code;
        const char *param;
    } cases[] = {
        {60, 120, TG_WINDOW_NONE, TG_OK, ""},
        {0, 60, TG_WINDOW_NONE, TG_OK, ""},
        {61, 120, TG_WINDOW_NONE, TG_EINVAL, "start_time"},
        {60, 121, TG_WINDOW_NONE, TG_EINVAL, "end_time"},
        {120, 120, TG_WINDOW_NONE, TG_EINVAL, "end_time"},
        {180, 120, TG_WINDOW_NONE, TG_EINVAL, "end_time"},
        {3600, 7200, TG_WINDOW_HOUR, TG_OK, ""},
        {60, 7200, TG_WINDOW_HOUR, TG_EINVAL, "start_time"},
        {3600, 7260, TG_WINDOW_HOUR, TG_EINVAL, "end_time"},
        {7200, 3600, TG_WINDOW_HOUR, TG_EINVAL, "end_time"},
        {3600, 3600, TG_WINDOW_HOUR, TG_EINVAL, "end_time"},
        {1717200000, 1717286400, TG_WINDOW_DAY, TG_OK, ""},
        {1717243200, 1717286400, TG_WINDOW_DAY, TG_EINVAL, "start_time"},
        {1717200000, 1717243200, TG_WINDOW_DAY, TG_EINVAL, "end_time"},
        {1717286400, 1717200000, TG_WINDOW_DAY, TG_EINVAL, "end_time"},
        {-86400, 0, TG_WINDOW_DAY, TG_OK, ""},
        {-3600, 0, TG_WINDOW_DAY, TG_EINVAL, "start_time"},
        {-7200, -3600, TG_WINDOW_HOUR, TG_OK, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_err err = {0};
        int rc = tg_summary_check_range(cases[i].start, cases[i].end, cases[i].g, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu [%lld, %lld): rc %d, want %d", i, (long long)cases[i].start,
                     (long long)cases[i].end, rc, cases[i].code);
        assert_string_equal(err.param, cases[i].param);
    }
}

/* ---------------------------------------------------------------- metadata */

static void test_metadata_validate(void **state)
{
    (void)state;
    static char keys[51][8];
    static tg_kv items[51];
    for (int i = 0; i < 51; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        items[i] = (tg_kv){keys[i], "v"};
    }
    tg_metadata md = {items, 50};
    tg_err err = {0};
    assert_int_equal(tg_metadata_validate(&md, "metadata", &err), TG_OK);
    md.n = 51;
    assert_int_equal(tg_metadata_validate(&md, "metadata", &err), TG_EINVAL);
    assert_string_equal(err.param, "metadata");

    char k40[41], k41[42], v500[501], v501[502];
    memset(k40, 'k', 40);
    k40[40] = '\0';
    memset(k41, 'k', 41);
    k41[41] = '\0';
    memset(v500, 'v', 500);
    v500[500] = '\0';
    memset(v501, 'v', 501);
    v501[501] = '\0';
    char k41param[64];
    snprintf(k41param, sizeof k41param, "metadata[%s]", k41);
    const struct {
        const char *k, *v;
        int code;
        const char *param;
    } cases[] = {
        {k40, "x", TG_OK, ""},
        {k41, "x", TG_EINVAL, k41param},
        {"a[b", "x", TG_EINVAL, "metadata[a[b]"},
        {"a]b", "x", TG_EINVAL, "metadata[a]b]"},
        {"", "x", TG_EINVAL, "metadata[]"},
        {"plan", v500, TG_OK, ""},
        {"plan", v501, TG_EINVAL, "metadata[plan]"},
        {"plan", "", TG_OK, ""},
        {"plan", NULL, TG_OK, ""}, /* removal in a patch */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_kv kv[2] = {{"ok", "fine"}, {cases[i].k, cases[i].v}};
        tg_metadata m = {kv, 2};
        tg_err e = {0};
        int rc = tg_metadata_validate(&m, "metadata", &e);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].code);
        assert_string_equal(e.param, cases[i].param);
    }
}

static const char *md_dump(const tg_metadata *md, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < md->n && len < size; i++) {
        int n = snprintf(out + len, size - len, "%s%s=%s", i ? "," : "", md->items[i].key,
                         md->items[i].value ? md->items[i].value : "(null)");
        if (n > 0)
            len += (size_t)n;
    }
    return out;
}

static void test_metadata_apply(void **state)
{
    (void)state;
    tg_kv base_items[] = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
    tg_metadata base = {base_items, 3};
    const struct {
        bool clear;
        tg_kv patch[3];
        size_t npatch;
        const char *want;
    } cases[] = {
        {false, {{0}}, 0, "a=1,b=2,c=3"},
        {false, {{"b", NULL}}, 1, "a=1,c=3"},
        {false, {{"b", "20"}}, 1, "a=1,b=20,c=3"},
        {false, {{"d", "4"}}, 1, "a=1,b=2,c=3,d=4"},
        {false, {{"b", NULL}, {"d", "4"}, {"a", "9"}}, 3, "a=9,c=3,d=4"},
        {false, {{"zz", NULL}}, 1, "a=1,b=2,c=3"}, /* removing an absent key: no-op */
        {false, {{"a", NULL}, {"b", NULL}, {"c", NULL}}, 3, ""},
        {true, {{0}}, 0, ""},
        {true, {{"x", "1"}}, 1, "x=1"},
        {true, {{"a", NULL}, {"y", "2"}}, 2, "y=2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_arena a;
        tg_arena_init(&a, 0);
        tg_metadata patch = {(tg_kv *)cases[i].patch, cases[i].npatch};
        tg_metadata out = {0};
        assert_int_equal(tg_metadata_apply(&base, cases[i].clear, &patch, &a, &out), TG_OK);
        char got[256];
        md_dump(&out, got, sizeof got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("apply case %zu: got \"%s\", want \"%s\"", i, got, cases[i].want);
        tg_arena_free(&a);
    }
    /* base is left intact */
    char got[256];
    assert_string_equal(md_dump(&base, got, sizeof got), "a=1,b=2,c=3");
    assert_string_equal(tg_metadata_get(&base, "b"), "2");
    assert_null(tg_metadata_get(&base, "nope"));
}

static void test_metadata_encode_decode(void **state)
{
    (void)state;
    tg_kv items[] = {{"plan", "pro"}, {"empty", ""}, {"utf8", "\xC3\xA9t\xC3\xA9"}, {"z", "1"}};
    tg_metadata md = {items, 4};
    tg_buf b;
    tg_buf_init(&b, 1 << 16);
    assert_int_equal(tg_metadata_encode(&md, &b), TG_OK);
    const char expect[] = "plan\0pro\0empty\0\0utf8\0\xC3\xA9t\xC3\xA9\0z\0001";
    assert_int_equal(b.len, sizeof expect); /* includes the final NUL */
    assert_memory_equal(b.data, expect, sizeof expect);

    tg_arena a;
    tg_arena_init(&a, 0);
    tg_metadata back = {0};
    assert_int_equal(tg_metadata_decode(b.data, b.len, &a, &back), 0);
    char got[256];
    assert_string_equal(md_dump(&back, got, sizeof got), "plan=pro,empty=,utf8=\xC3\xA9t\xC3\xA9,z=1");

    /* empty map */
    tg_metadata none = {NULL, 0}, back0 = {0};
    tg_buf_reset(&b);
    assert_int_equal(tg_metadata_encode(&none, &b), TG_OK);
    assert_int_equal(b.len, 0);
    assert_int_equal(tg_metadata_decode("", 0, &a, &back0), 0);
    assert_int_equal(back0.n, 0);

    /* corrupt blobs */
    const struct {
        const char *data;
        size_t len;
    } bad[] = {
        {"a\0b", 3},       /* no final NUL */
        {"a\0", 2},        /* key without value */
        {"a\0b\0c\0", 6},  /* odd number of strings */
        {"abc", 3},        /* no NUL at all */
        {"a\0b\0c", 5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_metadata m = {0};
        if (tg_metadata_decode(bad[i].data, bad[i].len, &a, &m) != -1)
            fail_msg("corrupt blob %zu was accepted", i);
    }
    tg_arena_free(&a);
    tg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formula_and_window_names),
        cmocka_unit_test(test_window_start),
        cmocka_unit_test(test_meter_validate),
        cmocka_unit_test(test_event_check_accepts),
        cmocka_unit_test(test_event_check_errors),
        cmocka_unit_test(test_event_check_boundaries),
        cmocka_unit_test(test_event_check_count_needs_no_value),
        cmocka_unit_test(test_event_value_digits_accepted),
        cmocka_unit_test(test_event_check_names),
        cmocka_unit_test(test_bucket_sum_count),
        cmocka_unit_test(test_bucket_last),
        cmocka_unit_test(test_bucket_merge),
        cmocka_unit_test(test_bucket_merge_equals_single),
        cmocka_unit_test(test_summary_check_range),
        cmocka_unit_test(test_metadata_validate),
        cmocka_unit_test(test_metadata_apply),
        cmocka_unit_test(test_metadata_encode_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
