/* test_daypage.c -- unit tests for core/daypage.h (the stored minutes of one pair and day) and
 * the compact decimal encoding of core/varint.h it shares with event blocks.
 *
 * A day page is the only stored aggregate of additive meters: a merge that loses, doubles or
 * corrupts an entry changes what every later summary and invoice says. A merge copies the
 * entries no delta touches as bytes, so the tests check:
 *   - the compact decimal round trip at every scale, at the 64-bit edges (where the encoder
 *     switches between 64- and 128-bit arithmetic) and at the 128-bit limits;
 *   - 2,000 random merges into one growing page against a model, including repeated minutes,
 *     cancellations that drop an entry, and negative sums;
 *   - merging deltas in many steps gives the same bytes as merging them at once;
 *   - deltas outside the day and sums that overflow are refused; a page cut at every length is
 *     a shorter page when cut between entries and refused otherwise, never read past.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/daypage.h"
#include "core/varint.h"

#define DAY INT64_C(1764547200) /* a UTC midnight */
#define DEC_MAX ((tg_dec)(((unsigned __int128)1 << 127) - 1))
#define DEC_MIN (-DEC_MAX - 1)

/* Varints of every width, at each power of two and either side of it: each reads back whole
 * (through the one-byte, 64-bit and 128-bit paths), every truncation is refused, and so is
 * a twentieth byte. */
static void test_varint_every_width(void **state)
{
    (void)state;
    for (int k = 0; k <= 128; k++) {
        unsigned __int128 p = k == 128 ? 0 : (unsigned __int128)1 << k;
        unsigned __int128 vals[3] = {p - 1, p, p + 1};
        for (int j = 0; j < 3; j++) {
            tg_buf b;
            tg_buf_init(&b, 64);
            tg_varint_put(&b, vals[j]);
            const unsigned char *q = (const unsigned char *)b.data, *end = q + b.len;
            unsigned __int128 got = 0;
            assert_int_equal(tg_varint_get(&q, end, &got), 0);
            assert_true(q == end);
            assert_true(got == vals[j]);
            for (size_t cut = 0; cut < b.len; cut++) {
                q = (const unsigned char *)b.data;
                assert_int_equal(tg_varint_get(&q, q + cut, &got), -1);
            }
            tg_buf_free(&b);
        }
    }
    unsigned char longest[20];
    memset(longest, 0x80, sizeof longest);
    longest[18] = 0x03; /* 19 bytes: 128 bits */
    const unsigned char *q = longest;
    unsigned __int128 got = 0;
    assert_int_equal(tg_varint_get(&q, longest + sizeof longest, &got), 0);
    assert_true(got == (unsigned __int128)3 << 126);
    assert_true(q == longest + 19);
    longest[18] = 0x80;
    longest[19] = 0x01;
    q = longest;
    assert_int_equal(tg_varint_get(&q, longest + sizeof longest, &got), -1);
}

static void test_compact_decimal_round_trip(void **state)
{
    (void)state;
    tg_dec vals[64];
    size_t n = 0;
    vals[n++] = 0;
    vals[n++] = 1;
    vals[n++] = -1;
    vals[n++] = DEC_MAX;
    vals[n++] = DEC_MIN;
    vals[n++] = DEC_MAX - 1;
    vals[n++] = DEC_MIN + 1;
    vals[n++] = INT64_MAX;
    vals[n++] = INT64_MIN;
    vals[n++] = (tg_dec)INT64_MAX + 1;
    vals[n++] = (tg_dec)INT64_MIN - 1;
    vals[n++] = (tg_dec)INT64_MAX * 10;
    vals[n++] = (tg_dec)INT64_MIN * 10;
    tg_dec p = 1;
    for (int i = 0; i <= 24; i++, p *= 10) { /* every scale, both signs, with and without a 7 */
        vals[n++] = p;
        if (i % 3 == 0 && n + 2 < sizeof vals / sizeof vals[0]) {
            vals[n++] = -p * 7;
            vals[n++] = p * 7 + 3;
        }
    }
    for (size_t i = 0; i < n; i++) {
        tg_buf b;
        tg_buf_init(&b, 64);
        tg_dec_put_compact(&b, vals[i]);
        const unsigned char *q = (const unsigned char *)b.data, *end = q + b.len;
        tg_dec got = 0;
        assert_int_equal(tg_dec_get_compact(&q, end, &got), 0);
        assert_true(q == end);
        assert_true(got == vals[i]);
        /* the shortest form: the mantissa has no trailing zero unless the scale is 0 */
        const unsigned char *m = (const unsigned char *)b.data + 1;
        unsigned __int128 u = 0;
        assert_int_equal(tg_varint_get(&m, end, &u), 0);
        tg_dec mant = tg_unzigzag(u);
        if (b.data[0] != 0)
            assert_true(mant % 10 != 0);
        tg_buf_free(&b);
    }
    /* a mantissa too large for its scale is refused, not wrapped */
    tg_buf b;
    tg_buf_init(&b, 64);
    unsigned char sc = 0;
    tg_buf_append(&b, &sc, 1);
    tg_varint_put(&b, tg_zigzag(DEC_MAX / 10));
    const unsigned char *q = (const unsigned char *)b.data;
    tg_dec got;
    assert_int_equal(tg_dec_get_compact(&q, q + b.len, &got), -1);
    tg_buf_free(&b);
}

/* Decodes a page into minute-indexed arrays; fails the test when it is not well formed. */
static void decode(const tg_buf *page, tg_dec *sum, int64_t *count)
{
    memset(sum, 0, 1440 * sizeof *sum);
    memset(count, 0, 1440 * sizeof *count);
    tg_daypage_reader r;
    tg_daypage_open(&r, DAY, page->data, page->len);
    tg_delta d;
    int rc;
    int64_t last = -1;
    while ((rc = tg_daypage_next(&r, &d)) == 1) {
        int64_t k = (d.minute - DAY) / 60;
        assert_true(k > last && k < 1440);
        assert_true(d.count != 0); /* entries whose count fell to zero are dropped */
        sum[k] = d.sum;
        count[k] = d.count;
        last = k;
    }
    assert_int_equal(rc, 0);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int delta_cmp(const void *a, const void *b)
{
    const tg_delta *x = a, *y = b;
    return (x->minute > y->minute) - (x->minute < y->minute);
}

static void test_merge_against_model(void **state)
{
    (void)state;
    static tg_dec msum[1440], gsum[1440];
    static int64_t mcount[1440], gcount[1440];
    memset(msum, 0, sizeof msum);
    memset(mcount, 0, sizeof mcount);
    tg_buf page, next;
    tg_buf_init(&page, 1 << 20);
    tg_buf_init(&next, 1 << 20);
    uint64_t s = 0x2545F4914F6CDD1DULL;
    tg_delta d[64];
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + rnd(&s) % 40;
        for (size_t i = 0; i < n; i++) {
            int64_t k = (int64_t)(rnd(&s) % 1440);
            uint64_t r = rnd(&s);
            if (r % 5 == 0 && mcount[k] != 0) { /* cancel what the minute holds */
                d[i] = (tg_delta){.minute = DAY + k * 60, .sum = -msum[k], .count = -mcount[k]};
            } else {
                tg_dec v = (tg_dec)(r % 100000) * 1000000 - 20000000000; /* some negative */
                if (r % 97 == 0)
                    v *= (tg_dec)INT64_MAX; /* past 64 bits */
                d[i] = (tg_delta){.minute = DAY + k * 60, .sum = v, .count = 1 + (int64_t)(r % 3)};
            }
            /* the model takes deltas in the order given; a cancellation must see the earlier
             * deltas of its minute in this round, so apply and keep them in order */
            msum[k] += d[i].sum;
            mcount[k] += d[i].count;
            if (mcount[k] == 0)
                msum[k] = 0; /* the page drops a minute whose count is zero */
        }
        qsort(d, n, sizeof d[0], delta_cmp); /* stable enough: sums commute */
        tg_buf_reset(&next);
        assert_int_equal(tg_daypage_merge(DAY, page.data, page.len, d, n, &next), 0);
        tg_buf t = page;
        page = next;
        next = t;
        decode(&page, gsum, gcount);
        for (int k = 0; k < 1440; k++) {
            if (gcount[k] != mcount[k] || gsum[k] != msum[k])
                fail_msg("round %d minute %d: count %lld want %lld", round, k,
                         (long long)gcount[k], (long long)mcount[k]);
        }
    }
    tg_buf_free(&page);
    tg_buf_free(&next);
}

/* Step by step or all at once, the page is the same bytes (the encoding is canonical). */
static void test_merge_steps_equal_one_merge(void **state)
{
    (void)state;
    enum { N = 3000 };
    tg_delta *all = malloc(N * sizeof *all);
    assert_non_null(all);
    uint64_t s = 42;
    for (int i = 0; i < N; i++)
        all[i] = (tg_delta){.minute = DAY + (int64_t)(rnd(&s) % 1440) * 60,
                            .sum = (tg_dec)(rnd(&s) % 1000000) * 1000,
                            .count = 1};
    tg_buf one, page, next;
    tg_buf_init(&one, 1 << 20);
    tg_buf_init(&page, 1 << 20);
    tg_buf_init(&next, 1 << 20);
    tg_delta *sorted = malloc(N * sizeof *sorted);
    assert_non_null(sorted);
    memcpy(sorted, all, N * sizeof *all);
    qsort(sorted, N, sizeof *sorted, delta_cmp);
    assert_int_equal(tg_daypage_merge(DAY, NULL, 0, sorted, N, &one), 0);
    for (int i = 0; i < N; i += 37) {
        size_t n = (size_t)(N - i < 37 ? N - i : 37);
        qsort(all + i, n, sizeof *all, delta_cmp);
        tg_buf_reset(&next);
        assert_int_equal(tg_daypage_merge(DAY, page.data, page.len, all + i, n, &next), 0);
        tg_buf t = page;
        page = next;
        next = t;
    }
    assert_int_equal(page.len, one.len);
    assert_memory_equal(page.data, one.data, one.len);
    free(all);
    free(sorted);
    tg_buf_free(&one);
    tg_buf_free(&page);
    tg_buf_free(&next);
}

static void test_merge_refusals(void **state)
{
    (void)state;
    tg_buf page, out;
    tg_buf_init(&page, 1 << 20);
    tg_buf_init(&out, 1 << 20);
    tg_delta d[3] = {{.minute = DAY, .sum = 5, .count = 1},
                     {.minute = DAY + 600, .sum = DEC_MAX, .count = 2},
                     {.minute = DAY + 86340, .sum = -7, .count = 1}};
    assert_int_equal(tg_daypage_merge(DAY, NULL, 0, d, 3, &page), 0);
    /* outside the day, or not on a minute */
    const int64_t bad[] = {DAY - 60, DAY + 86400, DAY + 30};
    for (size_t i = 0; i < 3; i++) {
        tg_delta x = {.minute = bad[i], .sum = 1, .count = 1};
        tg_buf_reset(&out);
        assert_int_equal(tg_daypage_merge(DAY, page.data, page.len, &x, 1, &out), -1);
    }
    /* a sum that would overflow the stored one */
    tg_delta over = {.minute = DAY + 600, .sum = 1, .count = 1};
    tg_buf_reset(&out);
    assert_int_equal(tg_daypage_merge(DAY, page.data, page.len, &over, 1, &out), -1);
    /* every cut of the page, in an exactly sized copy (the sanitizer build sees a read past
     * it): a cut between entries is a shorter well-formed page, any other cut is refused */
    bool boundary[64] = {false};
    assert_true(page.len < sizeof boundary);
    tg_daypage_reader r;
    tg_daypage_open(&r, DAY, page.data, page.len);
    tg_delta e;
    boundary[0] = true;
    while (tg_daypage_next(&r, &e) == 1)
        boundary[r.p - (const unsigned char *)page.data] = true;
    tg_delta late = {.minute = DAY + 86340, .sum = 1, .count = 1};
    for (size_t len = 0; len < page.len; len++) {
        unsigned char *cut = malloc(len ? len : 1);
        assert_non_null(cut);
        memcpy(cut, page.data, len);
        tg_buf_reset(&out);
        int rc = tg_daypage_merge(DAY, cut, len, &late, 1, &out);
        if (rc != (boundary[len] ? 0 : -1))
            fail_msg("cut at %zu of %zu: merge returned %d", len, page.len, rc);
        free(cut);
    }
    tg_buf_free(&page);
    tg_buf_free(&out);
}

/* Delta runs: random deltas over months (also before 1970), with counts of 0 and below and
 * repeated minutes, read back as one delta a minute, each the sum of that minute's. */
static void test_deltarun_against_model(void **state)
{
    (void)state;
    enum { N = 3000 };
    static tg_delta d[N];
    uint64_t seed = 0x51ED5EEDu;
    tg_buf run;
    tg_buf_init(&run, 1 << 20);
    for (int round = 0; round < 20; round++) {
        size_t n = 1 + rnd(&seed) % N;
        int64_t base = (int64_t)(rnd(&seed) % 2000000) * 60 - INT64_C(600000) * 60;
        for (size_t i = 0; i < n; i++) {
            d[i].minute = base + (int64_t)(rnd(&seed) % 90000) * 60; /* ~2 months */
            d[i].sum = (tg_dec)(rnd(&seed) % 2000001) - 1000000;
            d[i].count = (int64_t)(rnd(&seed) % 5) - 2; /* -2..2: zero counts included */
        }
        qsort(d, n, sizeof *d, delta_cmp);
        tg_buf_reset(&run);
        assert_int_equal(tg_deltarun_put(&run, d, n), 0);
        tg_daypage_reader r;
        tg_deltarun_open(&r, run.data, run.len);
        tg_delta got;
        size_t i = 0;
        int rc;
        while ((rc = tg_deltarun_next(&r, &got)) == 1) {
            assert_true(i < n);
            tg_delta want = d[i++];
            for (; i < n && d[i].minute == want.minute; i++) {
                want.sum += d[i].sum;
                want.count += d[i].count;
            }
            assert_int_equal(got.minute, want.minute);
            assert_true(got.sum == want.sum);
            assert_int_equal(got.count, want.count);
        }
        assert_int_equal(rc, 0);
        assert_int_equal(i, n);
        /* reading from a minute steps over exactly the entries before it */
        int64_t from = d[rnd(&seed) % n].minute + (int64_t)(rnd(&seed) % 3) * 60 - 60;
        tg_daypage_reader all, part;
        tg_delta a, b;
        tg_deltarun_open(&all, run.data, run.len);
        tg_deltarun_open(&part, run.data, run.len);
        int ra;
        while ((ra = tg_deltarun_next(&all, &a)) == 1 && a.minute < from)
            ;
        for (; ra == 1; ra = tg_deltarun_next(&all, &a)) {
            assert_int_equal(tg_deltarun_next_from(&part, from, &b), 1);
            assert_int_equal(b.minute, a.minute);
            assert_true(b.sum == a.sum);
            assert_int_equal(b.count, a.count);
        }
        assert_int_equal(ra, 0);
        assert_int_equal(tg_deltarun_next_from(&part, from, &b), 0);
    }
    tg_buf_free(&run);
}

static void test_deltarun_refusals(void **state)
{
    (void)state;
    tg_buf run;
    tg_buf_init(&run, 1 << 20);
    /* out of order, not on a minute, a sum overflowing within a minute */
    tg_delta unordered[2] = {{.minute = DAY + 120, .sum = 1, .count = 1},
                             {.minute = DAY + 60, .sum = 1, .count = 1}};
    assert_int_equal(tg_deltarun_put(&run, unordered, 2), -1);
    tg_buf_reset(&run);
    tg_delta off_minute = {.minute = DAY + 30, .sum = 1, .count = 1};
    assert_int_equal(tg_deltarun_put(&run, &off_minute, 1), -1);
    tg_buf_reset(&run);
    tg_delta over[2] = {{.minute = DAY, .sum = DEC_MAX, .count = 1},
                        {.minute = DAY, .sum = 1, .count = 1}};
    assert_int_equal(tg_deltarun_put(&run, over, 2), -1);
    /* two minutes each within the bounds, but further apart than a reader accepts */
    tg_buf_reset(&run);
    int64_t far = (INT64_C(1) << 40) - 1;
    tg_delta apart[2] = {{.minute = -far * 60, .sum = 1, .count = 1},
                         {.minute = far * 60, .sum = 1, .count = 1}};
    assert_int_equal(tg_deltarun_put(&run, apart, 2), -1);

    /* every cut of a run: between entries it is a shorter run, elsewhere refused */
    tg_delta d[3] = {{.minute = DAY, .sum = 5, .count = 0},
                     {.minute = DAY + 86400 * 40, .sum = DEC_MAX, .count = -3},
                     {.minute = DAY + 86400 * 41, .sum = -7, .count = 1}};
    tg_buf_reset(&run);
    assert_int_equal(tg_deltarun_put(&run, d, 3), 0);
    bool boundary[96] = {false};
    assert_true(run.len < sizeof boundary);
    tg_daypage_reader r;
    tg_delta e;
    tg_deltarun_open(&r, run.data, run.len);
    boundary[0] = true;
    while (tg_deltarun_next(&r, &e) == 1)
        boundary[r.p - (const unsigned char *)run.data] = true;
    for (size_t len = 0; len <= run.len; len++) {
        unsigned char *cut = malloc(len ? len : 1);
        assert_non_null(cut);
        memcpy(cut, run.data, len);
        for (int skip = 0; skip < 2; skip++) { /* decoding every entry, or stepping over */
            tg_deltarun_open(&r, cut, len);
            int rc;
            while ((rc = tg_deltarun_next_from(&r, skip ? INT64_MAX : INT64_MIN, &e)) == 1)
                ;
            if (rc != (boundary[len] ? 0 : -1))
                fail_msg("cut at %zu of %zu (skip %d): read ended with %d", len, run.len, skip,
                         rc);
        }
        free(cut);
    }
    /* a zero offset after the first entry is corrupt */
    const unsigned char zero_step[] = {0x02, 0x00, 0x02, 0x02, 0x00, 0x00, 0x02};
    tg_deltarun_open(&r, zero_step, sizeof zero_step);
    assert_int_equal(tg_deltarun_next(&r, &e), 1);
    assert_int_equal(tg_deltarun_next(&r, &e), -1);
    tg_buf_free(&run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_every_width),
        cmocka_unit_test(test_compact_decimal_round_trip),
        cmocka_unit_test(test_merge_against_model),
        cmocka_unit_test(test_merge_steps_equal_one_merge),
        cmocka_unit_test(test_merge_refusals),
        cmocka_unit_test(test_deltarun_against_model),
        cmocka_unit_test(test_deltarun_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
