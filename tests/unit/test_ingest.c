/* test_ingest.c -- unit tests for the ingest building blocks: core/dedupe.h (the identifier
 * index), core/eventblock.h (the event block codec) and core/overlay.h (live usage deltas).
 *
 * These three modules decide what a customer is billed on the fast path: the index decides
 * whether an event is a duplicate (a missed candidate double-bills, a lost entry refuses a
 * real event), the block codec is the only stored copy of additive events (every field must
 * survive a round trip exactly, and a damaged block must be reported, never read past), and
 * the overlay is what summaries add to the stored buckets until a checkpoint (sums must be
 * exact, readers must never see a half-applied change). The tests check:
 *   - dedupe: the keyed hash, 2,000,000 entries all found with their locators, absent
 *     identifiers almost never produce a candidate, exact counts, the memory bound, locator
 *     limits, repeated hashes; 14,000,000 raw hashes, past the size where arrays take huge pages;
 *   - eventblock: a 10,000-event round trip over every field's edge values, extras, the
 *     end-of-block answer, truncation at every length (in exactly sized heap copies so the
 *     sanitizer build catches any read past the end), bad versions, crafted corrupt blocks
 *     (decoded in a child process, so a crash or sanitizer abort is reported as a failure of
 *     that case only), and the size cap;
 *   - overlay: add/read against a reference model, independence of pairs, size, each,
 *     clear, overflow refusals, and a writer/readers concurrency smoke test; the model tests
 *     run twice, once with the shards' frozen part in play (freezing from the first add), and
 *     a random walk of 200,000 adds, reads, walks and clears checks the two parts merged; the
 *     frozen part takes less than half the memory; an add that would overflow a frozen delta
 *     is kept apart.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "core/decimal.h"
#include "core/dedupe.h"
#include "core/eventblock.h"
#include "core/model.h"
#include "core/overlay.h"

#define DEC_MAX ((tg_dec)(((unsigned __int128)1 << 127) - 1))
#define DEC_MIN (-DEC_MAX - 1)

/* Compares two decimals through their exact text, so a failure prints both values. */
#define assert_dec_equal(a, b)                                                                \
    do {                                                                                      \
        char buf_a_[TG_DEC_STR_MAX], buf_b_[TG_DEC_STR_MAX];                                  \
        tg_dec_format((a), buf_a_);                                                           \
        tg_dec_format((b), buf_b_);                                                           \
        assert_string_equal(buf_a_, buf_b_);                                                  \
        assert_true((a) == (b));                                                              \
    } while (0)

static tg_dec D(const char *s)
{
    tg_dec d = 0;
    if (tg_dec_parse(s, strlen(s), &d))
        fail_msg("bad decimal literal in test: %s", s);
    return d;
}

/* Writes prefix followed by the decimal digits of n into buf (cheap: called millions of
 * times, so no snprintf). Returns buf. */
static char *make_id(char *buf, const char *prefix, uint64_t n)
{
    size_t k = strlen(prefix);
    memcpy(buf, prefix, k);
    char tmp[24];
    size_t t = 0;
    do {
        tmp[t++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (t)
        buf[k++] = tmp[--t];
    buf[k] = '\0';
    return buf;
}

/* ================================================================ dedupe */

#define SEED UINT64_C(0x5eed5eed12345678)

static void test_dedupe_hash_keyed(void **state)
{
    (void)state;
    uint64_t base = tg_dedupe_hash(SEED, "acct_1", 0, "ev-1");
    /* deterministic */
    for (int i = 0; i < 3; i++)
        assert_int_equal(tg_dedupe_hash(SEED, "acct_1", 0, "ev-1"), base);

    /* every input changes the hash */
    const struct {
        uint64_t seed;
        const char *account;
        int livemode;
        const char *identifier;
    } others[] = {
        {SEED + 1, "acct_1", 0, "ev-1"},
        {0, "acct_1", 0, "ev-1"},
        {SEED, "acct_2", 0, "ev-1"},
        {SEED, "acct_1x", 0, "ev-1"},
        {SEED, "", 0, "ev-1"},
        {SEED, "acct_1", 1, "ev-1"},
        {SEED, "acct_1", 0, "ev-2"},
        {SEED, "acct_1", 0, "ev-1 "},
        {SEED, "acct_1", 0, "Ev-1"},
        {SEED, "acct_1", 0, ""},
        /* moving characters across the account/identifier boundary */
        {SEED, "acct_1e", 0, "v-1"},
        {SEED, "acct_", 0, "1ev-1"},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        uint64_t h = tg_dedupe_hash(others[i].seed, others[i].account, others[i].livemode,
                                    others[i].identifier);
        if (h == base)
            fail_msg("case %zu: hash equals the base hash", i);
        /* and is itself deterministic */
        assert_int_equal(tg_dedupe_hash(others[i].seed, others[i].account, others[i].livemode,
                                        others[i].identifier),
                         h);
    }

    /* long identifiers (several 8-byte words, every tail length) differ in the last byte */
    char a[TG_NAME_MAX + 1], b[TG_NAME_MAX + 1];
    for (size_t len = 1; len <= TG_NAME_MAX; len++) {
        memset(a, 'x', len);
        a[len] = '\0';
        memcpy(b, a, len + 1);
        b[len - 1] = 'y';
        assert_true(tg_dedupe_hash(SEED, "acct_1", 1, a) != tg_dedupe_hash(SEED, "acct_1", 1, b));
        /* a trailing NUL-like difference: length alone must change the hash */
        if (len > 1)
            assert_true(tg_dedupe_hash(SEED, "acct_1", 1, a) !=
                        tg_dedupe_hash(SEED, "acct_1", 1, a + 1));
    }
}

/* Whether loc is among the candidates tg_dedupe_find gives for h. */
static bool has_candidate(const tg_dedupe *d, uint64_t h, uint64_t loc)
{
    uint64_t out[TG_DEDUPE_MAX_CANDIDATES];
    int n = tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES);
    assert_in_range(n, 0, TG_DEDUPE_MAX_CANDIDATES);
    for (int i = 0; i < n; i++)
        if (out[i] == loc)
            return true;
    return false;
}

static void test_dedupe_locator_limits(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    uint64_t h = tg_dedupe_hash(SEED, "acct", 0, "limits");

    const uint64_t refused[] = {0, TG_DEDUPE_ROW + 1, UINT64_C(1) << 32, UINT64_C(1) << 40,
                                UINT64_MAX};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (tg_dedupe_insert(d, h, refused[i]) != -1)
            fail_msg("locator %#llx was accepted", (unsigned long long)refused[i]);
    assert_int_equal(tg_dedupe_count(d), 0);
    uint64_t out[TG_DEDUPE_MAX_CANDIDATES];
    assert_int_equal(tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES), 0);

    assert_int_equal(tg_dedupe_insert(d, h, TG_DEDUPE_ROW), 0);
    assert_int_equal(tg_dedupe_count(d), 1);
    assert_int_equal(tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES), 1);
    assert_int_equal(out[0], TG_DEDUPE_ROW);

    uint64_t h1 = tg_dedupe_hash(SEED, "acct", 0, "one");
    assert_int_equal(tg_dedupe_insert(d, h1, 1), 0);
    assert_int_equal(tg_dedupe_find(d, h1, out, TG_DEDUPE_MAX_CANDIDATES), 1);
    assert_int_equal(out[0], 1);
    assert_int_equal(tg_dedupe_count(d), 2);
    tg_dedupe_free(d);
    tg_dedupe_free(NULL);
}

static void test_dedupe_same_hash_twice(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    /* Hashes with tag 0 and all-ones, the first and last partitions, and ordinary ones. */
    const uint64_t hashes[] = {
        0,
        UINT64_MAX,
        UINT64_C(0xFF00000000000000),
        UINT64_C(0x00000000FFFFFFFF),
        tg_dedupe_hash(SEED, "acct", 1, "twice"),
    };
    for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
        uint64_t h = hashes[i];
        assert_int_equal(tg_dedupe_insert(d, h, 7), 0);
        assert_int_equal(tg_dedupe_insert(d, h, TG_DEDUPE_ROW), 0);
        assert_int_equal(tg_dedupe_insert(d, h, 42), 0);
        uint64_t out[TG_DEDUPE_MAX_CANDIDATES];
        int n = tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES);
        assert_int_equal(n, 3);
        bool seen7 = false, seen_row = false, seen42 = false;
        for (int k = 0; k < n; k++) {
            seen7 |= out[k] == 7;
            seen_row |= out[k] == TG_DEDUPE_ROW;
            seen42 |= out[k] == 42;
        }
        assert_true(seen7 && seen_row && seen42);
        /* max bounds what is written */
        uint64_t one[2] = {0, 0xdead};
        assert_int_equal(tg_dedupe_find(d, h, one, 1), 1);
        assert_int_equal(one[1], 0xdead);
        assert_int_equal(tg_dedupe_find(d, h, one, 0), 0);
    }
    assert_int_equal(tg_dedupe_count(d), 3 * (sizeof hashes / sizeof hashes[0]));
    tg_dedupe_free(d);
}

static void test_dedupe_prefetch_any_hash(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    uint64_t x = 1;
    for (int round = 0; round < 2; round++) {
        const uint64_t fixed[] = {0, 1, UINT64_MAX, UINT64_C(0x8000000000000000),
                                  UINT64_C(0xFFFFFFFF), UINT64_C(0xFFFFFFFF00000000)};
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
            tg_dedupe_prefetch(d, fixed[i]);
        for (int i = 0; i < 100000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tg_dedupe_prefetch(d, x);
            if (round == 0 && i % 4 == 0)
                assert_int_equal(tg_dedupe_insert(d, x, (uint64_t)i % 1000 + 1), 0);
        }
    }
    assert_int_equal(tg_dedupe_count(d), 25000);
    tg_dedupe_free(d);
}

#define DEDUPE_N 2000000 /* past 1M, partitions grow to 2 MiB at least: huge pages */
#define DEDUPE_ABSENT 100000

static void test_dedupe_two_million(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    uint64_t *hashes = malloc(DEDUPE_N * sizeof *hashes);
    assert_non_null(hashes);
    char id[64];
    for (uint64_t i = 0; i < DEDUPE_N; i++) {
        hashes[i] = tg_dedupe_hash(SEED, "acct_big", 1, make_id(id, "evt_", i));
        if (i >= 16)
            tg_dedupe_prefetch(d, hashes[i - 16]); /* as the writer does; must not matter */
        if (tg_dedupe_insert(d, hashes[i], i % 1000 + 1) != 0)
            fail_msg("insert %llu failed", (unsigned long long)i);
        if (i % 250000 == 0)
            assert_int_equal(tg_dedupe_count(d), i + 1);
        if (i == 500000) { /* before huge pages: about 10.5 bytes an identifier */
            double per_entry = (double)tg_dedupe_bytes(d) / (double)tg_dedupe_count(d);
            if (per_entry >= 12.0 || per_entry < 8.0)
                fail_msg("%.2f bytes per entry (bytes %zu, count %zu), want 8-12", per_entry,
                         tg_dedupe_bytes(d), tg_dedupe_count(d));
        }
    }
    assert_int_equal(tg_dedupe_count(d), DEDUPE_N);
    /* past a million identifiers, every partition has grown to a huge page at least (when
     * the kernel gives them; otherwise the index stays at about 10.5 bytes an identifier) */
    if (tg_dedupe_huge_pages_enabled())
        assert_in_range(tg_dedupe_bytes(d), 64 * (2u << 20), 64 * (5u << 19));
    else
        assert_in_range(tg_dedupe_bytes(d), 8 * DEDUPE_N, 12 * DEDUPE_N);

    size_t missing = 0;
    for (uint64_t i = 0; i < DEDUPE_N; i++)
        if (!has_candidate(d, hashes[i], i % 1000 + 1) && missing++ < 5)
            fprintf(stderr, "identifier evt_%llu not found with locator %llu\n",
                    (unsigned long long)i, (unsigned long long)(i % 1000 + 1));
    if (missing)
        fail_msg("%zu of %d inserted identifiers not found with their locator", missing,
                 DEDUPE_N);

    /* absent identifiers (same scope, other names; and other scopes) */
    size_t false_candidates = 0;
    uint64_t out[TG_DEDUPE_MAX_CANDIDATES];
    for (uint64_t i = 0; i < DEDUPE_ABSENT; i++) {
        uint64_t h;
        switch (i % 3) {
        case 0:
            h = tg_dedupe_hash(SEED, "acct_big", 1, make_id(id, "absent_", i));
            break;
        case 1:
            h = tg_dedupe_hash(SEED, "acct_big", 0, make_id(id, "evt_", i)); /* test mode */
            break;
        default:
            h = tg_dedupe_hash(SEED, "acct_other", 1, make_id(id, "evt_", i));
            break;
        }
        if (tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES) > 0)
            false_candidates++;
    }
    /* at least 99.99% of absent lookups return no candidate */
    if (false_candidates * 10000 > DEDUPE_ABSENT)
        fail_msg("%zu of %d absent identifiers returned a candidate", false_candidates,
                 DEDUPE_ABSENT);

    assert_int_equal(tg_dedupe_count(d), DEDUPE_N); /* lookups changed nothing */
    free(hashes);
    tg_dedupe_free(d);
}

/* Past about 12 million identifiers the partitions' arrays reach 2 MiB and are mapped on
 * huge-page boundaries (slots_map's other path): every identifier stays found through the
 * growths, and the index still costs under 12 bytes an identifier. Raw hashes (no string
 * hashing) keep it to a few seconds. */
#define DEDUPE_HUGE_N 14000000

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static void test_dedupe_huge_arrays(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    for (uint64_t i = 0; i < DEDUPE_HUGE_N; i++)
        if (tg_dedupe_insert(d, splitmix(i), i % 4000 + 1) != 0)
            fail_msg("insert %llu failed", (unsigned long long)i);
    assert_int_equal(tg_dedupe_count(d), DEDUPE_HUGE_N);
    size_t missing = 0;
    for (uint64_t i = 0; i < DEDUPE_HUGE_N; i += 3)
        if (!has_candidate(d, splitmix(i), i % 4000 + 1))
            missing++;
    if (missing)
        fail_msg("%zu identifiers not found with their locator", missing);
    double per_entry = (double)tg_dedupe_bytes(d) / (double)tg_dedupe_count(d);
    if (per_entry >= 12.0)
        fail_msg("%.2f bytes per entry, want < 12", per_entry);
    tg_dedupe_free(d);
}

/* ================================================================ eventblock */

#define BLOCK_CAP ((size_t)64 << 20)
#define BASE_TS INT64_C(1717243200)

/* The fields of one event as the test means them. */
typedef struct want_event {
    char id[TG_NAME_MAX + 1];
    uint64_t meter_seq, customer_seq;
    int64_t ts;
    tg_dec value;
    size_t nextra;
    tg_kv extra[3];
} want_event;

static const char *const VALUES[] = {
    "0",
    "0.000000000001",
    "-12.5",
    "99999999999999999999999999.999999999999",
    "-99999999999999999999999999.999999999999",
    "-0.000000000001",
    "1",
    "12.5",
    "1000000",
    "0.1",
    "123456789.123456789012",
    "-1",
};

static const uint64_t SEQS[] = {
    0, 1, 127, 128, 16383, 16384, UINT64_C(1) << 32, (UINT64_C(1) << 40) - 1, UINT64_C(1) << 40,
};

/* Fills w with event i of the big round-trip block. */
static void want_fill(want_event *w, size_t i)
{
    static const tg_kv extras_one[1] = {{"region", "eu-west-1"}};
    static const tg_kv extras_three[3] = {{"k", ""}, {"a_longer_key_name", "v"}, {"empty", NULL}};
    memset(w, 0, sizeof *w);
    size_t len = i % TG_NAME_MAX + 1; /* 1..100 */
    for (size_t k = 0; k < len; k++)
        w->id[k] = (char)('!' + (i * 7 + k * 13) % 94);
    w->id[len] = '\0';
    w->meter_seq = SEQS[i % (sizeof SEQS / sizeof SEQS[0])];
    w->customer_seq = SEQS[(i / 3) % (sizeof SEQS / sizeof SEQS[0])];
    /* first event at the base, then before and after it (negative and positive deltas) */
    int64_t off = (int64_t)(i * 37 % 200001) - 100000;
    w->ts = i == 0 ? BASE_TS : BASE_TS + off * (i % 2 ? 1 : 97);
    size_t nv = sizeof VALUES / sizeof VALUES[0];
    const char *v = VALUES[i % nv];
    w->value = D(v);
    switch (i % 3) {
    case 0:
        w->nextra = 0;
        break;
    case 1:
        w->nextra = 1;
        w->extra[0] = extras_one[0];
        break;
    default:
        w->nextra = 3;
        memcpy(w->extra, extras_three, sizeof extras_three);
        break;
    }
}

static int want_add(tg_block *b, const want_event *w)
{
    tg_metadata md = {(tg_kv *)w->extra, w->nextra};
    return tg_block_add(b, w->id, w->meter_seq, w->customer_seq, w->ts, w->value,
                        w->nextra ? &md : NULL);
}

/* Checks decoded event e against w, with message context i. */
static void want_check(const want_event *w, const tg_block_event *e, size_t i)
{
    size_t len = strlen(w->id);
    if (e->identifier_len != len || memcmp(e->identifier, w->id, len) != 0)
        fail_msg("event %zu: identifier differs (len %zu, want %zu)", i, e->identifier_len, len);
    if (e->meter_seq != w->meter_seq || e->customer_seq != w->customer_seq)
        fail_msg("event %zu: meter/customer %llu/%llu, want %llu/%llu", i,
                 (unsigned long long)e->meter_seq, (unsigned long long)e->customer_seq,
                 (unsigned long long)w->meter_seq, (unsigned long long)w->customer_seq);
    if (e->timestamp != w->ts)
        fail_msg("event %zu: timestamp %lld, want %lld", i, (long long)e->timestamp,
                 (long long)w->ts);
    assert_dec_equal(e->value, w->value);
    if (e->nextra != w->nextra)
        fail_msg("event %zu: %zu extras, want %zu", i, e->nextra, w->nextra);
    for (size_t k = 0; k < w->nextra; k++) {
        const char *key = NULL, *val = NULL;
        size_t klen = 99, vlen = 99;
        assert_int_equal(tg_block_extra(e, k, &key, &klen, &val, &vlen), 0);
        const char *wv = w->extra[k].value ? w->extra[k].value : "";
        assert_int_equal(klen, strlen(w->extra[k].key));
        assert_memory_equal(key, w->extra[k].key, klen);
        assert_int_equal(vlen, strlen(wv));
        if (vlen)
            assert_memory_equal(val, wv, vlen);
    }
    /* asking for a pair past the last is refused */
    const char *key, *val;
    size_t klen, vlen;
    assert_int_equal(tg_block_extra(e, w->nextra, &key, &klen, &val, &vlen), -1);
}

/* Returns a malloc'd copy of exactly len bytes (so ASan sees any read past it). */
static unsigned char *exact_copy(const void *data, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len)
        memcpy(p, data, len);
    return p;
}

/* Decodes a whole block: returns the number of events read when it ends cleanly (0 from
 * tg_block_next), or -1 when open or next reported corruption. */
static long decode_all(const unsigned char *data, size_t len)
{
    tg_block_reader r;
    if (tg_block_open(&r, data, len))
        return -1;
    tg_block_event e;
    long n = 0;
    for (;;) {
        int rc = tg_block_next(&r, &e);
        if (rc == 0)
            return n;
        if (rc != 1)
            return -1;
        /* reading the extras must stay inside the block too */
        for (size_t k = 0; k < e.nextra && k < 4; k++) {
            const char *key, *val;
            size_t kl, vl;
            (void)tg_block_extra(&e, k, &key, &kl, &val, &vl);
        }
        n++;
    }
}

static void build_block(size_t n, want_event **wants_out, tg_buf *out)
{
    want_event *wants = calloc(n, sizeof *wants);
    assert_non_null(wants);
    tg_block b;
    tg_block_init(&b, BLOCK_CAP);
    for (size_t i = 0; i < n; i++) {
        want_fill(&wants[i], i);
        if (want_add(&b, &wants[i]) != 0)
            fail_msg("tg_block_add refused event %zu", i);
    }
    assert_int_equal(b.count, n);
    tg_buf_init(out, BLOCK_CAP);
    assert_int_equal(tg_block_finish(&b, out), 0);
    tg_block_free(&b);
    *wants_out = wants;
}

#define ROUND_TRIP_N 10000

static void test_block_round_trip(void **state)
{
    (void)state;
    want_event *wants;
    tg_buf out;
    build_block(ROUND_TRIP_N, &wants, &out);

    unsigned char *data = exact_copy(out.data, out.len);
    tg_block_reader r;
    assert_int_equal(tg_block_open(&r, data, out.len), 0);
    tg_block_event e;
    for (size_t i = 0; i < ROUND_TRIP_N; i++) {
        int rc = tg_block_next(&r, &e);
        if (rc != 1)
            fail_msg("tg_block_next returned %d at event %zu of %d", rc, i, ROUND_TRIP_N);
        want_check(&wants[i], &e, i);
    }
    assert_int_equal(tg_block_next(&r, &e), 0);
    assert_int_equal(tg_block_next(&r, &e), 0); /* and stays at the end */

    /* the average event stays compact (the header promises about 40 bytes typical; these
     * carry long identifiers and extras, so only a loose bound) */
    assert_true(out.len < (size_t)ROUND_TRIP_N * 200);

    free(data);
    tg_buf_free(&out);
    free(wants);
}

static void test_block_empty_and_single(void **state)
{
    (void)state;
    /* an empty block decodes to no events */
    tg_block b;
    tg_block_init(&b, 1024);
    tg_buf out;
    tg_buf_init(&out, 1024);
    assert_int_equal(tg_block_finish(&b, &out), 0);
    unsigned char *data = exact_copy(out.data, out.len);
    assert_int_equal(decode_all(data, out.len), 0);
    free(data);
    tg_block_free(&b);
    tg_buf_free(&out);

    /* one event far before the epoch, the extremes of the value range */
    const tg_dec values[] = {DEC_MAX, DEC_MIN, DEC_MIN + 1, 0, -1};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        tg_block_init(&b, 1024);
        tg_buf_init(&out, 1024);
        assert_int_equal(tg_block_add(&b, "x", 3, 4, -INT64_C(86400) * 365 * 100, values[i],
                                      NULL),
                         0);
        assert_int_equal(tg_block_finish(&b, &out), 0);
        tg_block_reader r;
        tg_block_event e;
        assert_int_equal(tg_block_open(&r, out.data, out.len), 0);
        assert_int_equal(tg_block_next(&r, &e), 1);
        assert_dec_equal(e.value, values[i]);
        assert_int_equal(e.timestamp, -INT64_C(86400) * 365 * 100);
        assert_int_equal(e.nextra, 0);
        assert_int_equal(tg_block_next(&r, &e), 0);
        tg_block_free(&b);
        tg_buf_free(&out);
    }
}

/* Truncation at every length of a block covering every shape of event. */
static void test_block_truncated_every_length(void **state)
{
    (void)state;
    want_event *wants;
    tg_buf out;
    build_block(150, &wants, &out);
    assert_int_equal(decode_all((const unsigned char *)out.data, out.len), 150);
    for (size_t len = 0; len < out.len; len++) {
        unsigned char *p = exact_copy(out.data, len);
        long rc = decode_all(p, len);
        free(p);
        if (rc != -1)
            fail_msg("block truncated to %zu of %zu bytes decoded as %ld events", len, out.len,
                     rc);
    }
    tg_buf_free(&out);
    free(wants);

    /* the big block: the last 300 lengths and a spread of the others */
    build_block(ROUND_TRIP_N, &wants, &out);
    for (size_t len = 0; len < out.len; len += len < out.len - 300 ? 4099 : 1) {
        unsigned char *p = exact_copy(out.data, len);
        long rc = decode_all(p, len);
        free(p);
        if (rc != -1)
            fail_msg("big block truncated to %zu of %zu bytes decoded as %ld events", len,
                     out.len, rc);
    }
    tg_buf_free(&out);
    free(wants);
}

static void test_block_bad_version(void **state)
{
    (void)state;
    want_event *wants;
    tg_buf out;
    build_block(3, &wants, &out);
    assert_int_equal(decode_all((const unsigned char *)out.data, out.len), 3);
    const unsigned char versions[] = {0, 2, 0x7f, 0x80, 0x81, 0xff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        unsigned char *p = exact_copy(out.data, out.len);
        p[0] = versions[i];
        tg_block_reader r;
        if (tg_block_open(&r, p, out.len) != -1)
            fail_msg("version byte %u accepted", versions[i]);
        free(p);
    }
    tg_buf_free(&out);
    free(wants);
}

/* ---- crafted corrupt blocks ---- */

static void put_raw_varint(tg_buf *b, unsigned __int128 v)
{
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        tg_buf_append(b, &c, 1);
    } while (v);
}

static unsigned __int128 zz(__int128 v)
{
    return v < 0 ? ((unsigned __int128)(-(v + 1)) << 1) | 1 : (unsigned __int128)v << 1;
}

static void put_u8(tg_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    tg_buf_append(b, &c, 1);
}

/* Writes a block header. */
static void put_header(tg_buf *b, uint64_t count, int64_t base)
{
    put_u8(b, 1);
    put_raw_varint(b, count);
    put_raw_varint(b, zz(base));
}

/* Writes one event with the given raw fields. */
static void put_event(tg_buf *b, const char *id, unsigned __int128 meter, int64_t delta,
                      unsigned scale, __int128 mantissa, uint64_t nextra)
{
    put_raw_varint(b, strlen(id));
    tg_buf_append(b, id, strlen(id));
    put_raw_varint(b, meter);
    put_raw_varint(b, 5); /* customer */
    put_raw_varint(b, zz(delta));
    put_u8(b, scale);
    put_raw_varint(b, zz(mantissa));
    put_raw_varint(b, nextra);
}

enum { CHILD_CORRUPT = 40, CHILD_DECODED = 41 };

/* Decodes data in a child process, so a crash or a sanitizer abort (UBSan halts on the first
 * report in the sanitizer build) fails this one case with a message instead of ending the
 * test run. Returns CHILD_CORRUPT when decoding reported -1, CHILD_DECODED when it read the
 * block to a clean end, anything else for a crash (the raw wait status + 1000). */
static int decode_in_child(const tg_buf *blk)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char *p = exact_copy(blk->data, blk->len);
        long n = decode_all(p, blk->len);
        free(p);
        _exit(n < 0 ? CHILD_CORRUPT : CHILD_DECODED);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) &&
        (WEXITSTATUS(status) == CHILD_CORRUPT || WEXITSTATUS(status) == CHILD_DECODED))
        return WEXITSTATUS(status);
    return 1000 + status;
}

static void test_block_crafted_corrupt(void **state)
{
    (void)state;
    const int64_t b0 = BASE_TS;
    int failures = 0;
    for (int c = 0;; c++) {
        tg_buf b;
        tg_buf_init(&b, 4096);
        const char *what = NULL;
        switch (c) {
        case 0:
            what = "control: one valid event";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 0);
            break;
        case 1:
            what = "count larger than the events present";
            put_header(&b, 2, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 0);
            break;
        case 2:
            what = "trailing bytes after the last event";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 0);
            put_u8(&b, 0);
            break;
        case 3:
            what = "scale 13";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 13, 125, 0);
            break;
        case 4:
            what = "scale 255";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 255, 125, 0);
            break;
        case 5:
            what = "identifier length past the end";
            put_header(&b, 1, b0);
            put_raw_varint(&b, 1000);
            tg_buf_append(&b, "abc", 3);
            break;
        case 6:
            what = "identifier length 2^64-1";
            put_header(&b, 1, b0);
            put_raw_varint(&b, UINT64_MAX);
            tg_buf_append(&b, "abc", 3);
            break;
        case 7:
            what = "meter seq above 2^64";
            put_header(&b, 1, b0);
            put_event(&b, "ok", (unsigned __int128)1 << 70, 0, 1, 125, 0);
            break;
        case 8:
            what = "overlong varint (20 continuation bytes)";
            put_header(&b, 1, b0);
            put_raw_varint(&b, 2);
            tg_buf_append(&b, "ok", 2);
            for (int k = 0; k < 20; k++)
                put_u8(&b, 0x80);
            put_u8(&b, 0);
            break;
        case 9:
            what = "extras count past the end";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 1000000);
            break;
        case 10:
            what = "extra value length past the end";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 1);
            put_raw_varint(&b, 1);
            tg_buf_append(&b, "k", 1);
            put_raw_varint(&b, 50);
            tg_buf_append(&b, "v", 1);
            break;
        case 11:
            what = "count 2^64-1 with one event";
            put_header(&b, UINT64_MAX, b0);
            put_event(&b, "ok", 1, 0, 1, 125, 0);
            break;
        case 12:
            /* mantissa 2^100 at scale 0 is 2^100 * 10^12 units: beyond tg_dec */
            what = "value beyond tg_dec (mantissa 2^100, scale 0)";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 0, (__int128)1 << 100, 0);
            break;
        case 13:
            what = "value beyond tg_dec (mantissa -2^126, scale 5)";
            put_header(&b, 1, b0);
            put_event(&b, "ok", 1, 0, 5, -((__int128)1 << 126), 0);
            break;
        case 14:
            what = "timestamp delta overflowing int64 (base INT64_MAX, delta +1)";
            put_header(&b, 1, INT64_MAX);
            put_event(&b, "ok", 1, 1, 1, 125, 0);
            break;
        default:
            break;
        }
        if (!what) {
            tg_buf_free(&b);
            break;
        }
        assert_false(b.failed);
        int want = c == 0 ? CHILD_DECODED : CHILD_CORRUPT;
        int got = decode_in_child(&b);
        if (got != want) {
            fprintf(stderr, "  crafted block %d (%s): %s\n", c, what,
                    got == CHILD_DECODED  ? "decoded as valid, want -1"
                    : got == CHILD_CORRUPT ? "reported corrupt, want decoded"
                                           : "decoder crashed or a sanitizer aborted");
            failures++;
        }
        tg_buf_free(&b);
    }
    if (failures)
        fail_msg("%d crafted blocks mishandled (see above)", failures);
}

/* Timestamps anywhere in int64 round-trip (the encoder accepts them, so the decoder must give
 * them back; the decoder must not overflow computing base + delta). Decoded in a child. */
static void test_block_extreme_timestamps(void **state)
{
    (void)state;
    const int64_t pairs[][2] = {
        {0, INT64_MAX},
        {0, INT64_MIN},
        {INT64_MIN, INT64_MAX},
        {INT64_MAX, INT64_MIN},
        {-1, INT64_MAX},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        tg_block b;
        tg_block_init(&b, 1024);
        assert_int_equal(tg_block_add(&b, "a", 1, 1, pairs[i][0], 1, NULL), 0);
        assert_int_equal(tg_block_add(&b, "b", 1, 1, pairs[i][1], 1, NULL), 0);
        tg_buf out;
        tg_buf_init(&out, 1024);
        assert_int_equal(tg_block_finish(&b, &out), 0);
        tg_block_free(&b);

        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            tg_block_reader r;
            tg_block_event e;
            int ok = tg_block_open(&r, out.data, out.len) == 0 && tg_block_next(&r, &e) == 1 &&
                     e.timestamp == pairs[i][0] && tg_block_next(&r, &e) == 1 &&
                     e.timestamp == pairs[i][1] && tg_block_next(&r, &e) == 0;
            _exit(ok ? CHILD_DECODED : CHILD_CORRUPT);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != CHILD_DECODED) {
            fprintf(stderr, "  timestamps %lld then %lld: %s\n", (long long)pairs[i][0],
                    (long long)pairs[i][1],
                    WIFEXITED(status) && WEXITSTATUS(status) == CHILD_CORRUPT
                        ? "did not round-trip"
                        : "decoder crashed or a sanitizer aborted");
            failures++;
        }
        tg_buf_free(&out);
    }
    if (failures)
        fail_msg("%d timestamp pairs did not round-trip (see above)", failures);
}

static void test_block_cap(void **state)
{
    (void)state;
    want_event *wants = calloc(1000, sizeof *wants);
    assert_non_null(wants);
    tg_block b;
    tg_block_init(&b, 2000);
    size_t added = 0;
    for (;; added++) {
        assert_true(added < 1000);
        want_fill(&wants[added], added);
        if (want_add(&b, &wants[added]) != 0)
            break;
    }
    assert_true(added > 0);
    assert_int_equal(b.count, added);
    assert_true(b.body.len <= 2000);
    size_t len_at_full = b.body.len;

    /* refused again, and nothing changes */
    assert_int_equal(want_add(&b, &wants[added]), -1);
    assert_int_equal(b.count, added);
    assert_int_equal(b.body.len, len_at_full);

    /* the block is still usable: a small event that fits is accepted (if any room is left) */
    want_event small;
    memset(&small, 0, sizeof small);
    strcpy(small.id, "s");
    small.meter_seq = 1;
    small.customer_seq = 2;
    small.ts = BASE_TS + 1;
    small.value = 0;
    bool small_added = false;
    if (2000 - len_at_full >= 8) { /* id 2, seqs 2, delta 1, scale 1, mantissa 1, nextra 1 */
        assert_int_equal(want_add(&b, &small), 0);
        small_added = true;
    }

    tg_buf out;
    tg_buf_init(&out, 4096);
    assert_int_equal(tg_block_finish(&b, &out), 0);
    unsigned char *data = exact_copy(out.data, out.len);
    tg_block_reader r;
    tg_block_event e;
    assert_int_equal(tg_block_open(&r, data, out.len), 0);
    for (size_t i = 0; i < added; i++) {
        assert_int_equal(tg_block_next(&r, &e), 1);
        want_check(&wants[i], &e, i);
    }
    if (small_added) {
        assert_int_equal(tg_block_next(&r, &e), 1);
        want_check(&small, &e, added);
    }
    assert_int_equal(tg_block_next(&r, &e), 0);
    free(data);
    tg_buf_free(&out);
    tg_block_free(&b);

    /* a cap too small for any event: the first add fails, the block stays empty and valid */
    tg_block_init(&b, 3);
    assert_int_equal(tg_block_add(&b, "identifier", 1, 1, BASE_TS, 1, NULL), -1);
    assert_int_equal(b.count, 0);
    assert_int_equal(b.body.len, 0);
    tg_buf_init(&out, 64);
    assert_int_equal(tg_block_finish(&b, &out), 0);
    assert_int_equal(decode_all((const unsigned char *)out.data, out.len), 0);
    tg_buf_free(&out);
    tg_block_free(&b);
    free(wants);
}

/* ================================================================ overlay */

/* The overlay's freeze_at for the model tests: 0 (the default: these small tests stay in the
 * hash part) or 1 (freezing from the first add, so reads merge both parts). A frozen minute
 * whose sum and count are both zero is dropped, so then zero cells may or may not be seen. */
static size_t g_freeze_at;

static int freeze_default(void **state)
{
    (void)state;
    g_freeze_at = 0;
    return 0;
}

static int freeze_early(void **state)
{
    (void)state;
    g_freeze_at = 1;
    return 0;
}

static bool zero_delta(const tg_delta *d)
{
    return d->sum == 0 && d->count == 0;
}

/* A reference model of the overlay: a flat list of (meter, customer, minute) cells. */
#define MODEL_MAX 256
typedef struct model {
    struct {
        uint64_t m, c;
        tg_delta d;
        int visits;
    } cell[MODEL_MAX];
    size_t n;
} model;

static void model_add(model *md, uint64_t m, uint64_t c, int64_t minute, tg_dec sum,
                      int64_t count)
{
    for (size_t i = 0; i < md->n; i++)
        if (md->cell[i].m == m && md->cell[i].c == c && md->cell[i].d.minute == minute) {
            md->cell[i].d.sum += sum;
            md->cell[i].d.count += count;
            return;
        }
    assert_true(md->n < MODEL_MAX);
    md->cell[md->n].m = m;
    md->cell[md->n].c = c;
    md->cell[md->n].d = (tg_delta){.minute = minute, .sum = sum, .count = count};
    md->n++;
}

/* Checks tg_overlay_read of (m, c, [from, to)) against the model. */
static void check_read(tg_overlay *o, const model *md, uint64_t m, uint64_t c, int64_t from,
                       int64_t to)
{
    void *lk = tg_overlay_rdlock(o, m, c);
    assert_non_null(lk);
    tg_delta *got = NULL;
    long n = tg_overlay_read(o, m, c, from, to, &got);
    tg_overlay_unlock(lk);
    assert_true(n >= 0);
    if (g_freeze_at) { /* zero deltas are not compared: frozen ones are dropped */
        long k = 0;
        for (long i = 0; i < n; i++)
            if (!zero_delta(&got[i]))
                got[k++] = got[i];
        n = k;
    }
    /* the model's cells of the pair in range, newest first */
    tg_delta want[MODEL_MAX];
    size_t nw = 0;
    for (size_t i = 0; i < md->n; i++)
        if (md->cell[i].m == m && md->cell[i].c == c && md->cell[i].d.minute >= from &&
            md->cell[i].d.minute < to && !(g_freeze_at && zero_delta(&md->cell[i].d)))
            want[nw++] = md->cell[i].d;
    for (size_t i = 1; i < nw; i++) /* insertion sort, descending minute */
        for (size_t k = i; k > 0 && want[k].minute > want[k - 1].minute; k--) {
            tg_delta t = want[k];
            want[k] = want[k - 1];
            want[k - 1] = t;
        }
    if ((size_t)n != nw)
        fail_msg("read (%llu,%llu,[%lld,%lld)): %ld deltas, want %zu", (unsigned long long)m,
                 (unsigned long long)c, (long long)from, (long long)to, n, nw);
    for (size_t i = 0; i < nw; i++) {
        assert_int_equal(got[i].minute, want[i].minute);
        assert_dec_equal(got[i].sum, want[i].sum);
        assert_int_equal(got[i].count, want[i].count);
    }
    free(got);
}

static const struct {
    uint64_t m, c;
    int64_t minute;
    const char *sum;
    int64_t count;
} ADDS[] = {
    {1, 1, 600, "1.5", 1},
    {1, 1, 120, "0.1", 1},
    {1, 1, 6000, "2", 2},
    {1, 1, 600, "0.25", 1}, /* repeated minute */
    {1, 2, 600, "100", 1},  /* another customer, same minute */
    {2, 1, 600, "1000", 1}, /* swapped pair */
    {1, 1, 60, "-0.1", -1}, /* a cancellation-like negative delta */
    {1, 1, 3000, "0.000000000001", 1},
    {1, 1, 120, "0.2", 1},
    {1, 2, 60, "7", 3},
    {1, 1, -60, "4", 1}, /* before the epoch */
    {2, 1, 600, "-1000", -1},
    {UINT64_C(1) << 40, UINT64_MAX, 600, "99999999999999999999999999.999999999999", 1},
    {1, 1, 600, "0.25", 1},
    {0, 0, 0, "0", 0},
};

static model *build_overlay(tg_overlay *o)
{
    model *md = calloc(1, sizeof *md);
    assert_non_null(md);
    for (size_t i = 0; i < sizeof ADDS / sizeof ADDS[0]; i++) {
        tg_dec s = D(ADDS[i].sum);
        assert_int_equal(tg_overlay_add(o, ADDS[i].m, ADDS[i].c, ADDS[i].minute, s,
                                        ADDS[i].count),
                         0);
        model_add(md, ADDS[i].m, ADDS[i].c, ADDS[i].minute, s, ADDS[i].count);
        if (!g_freeze_at) /* else a minute can be counted in both parts */
            assert_int_equal(tg_overlay_size(o), md->n);
    }
    return md;
}

static void check_all_reads(tg_overlay *o, const model *md)
{
    const int64_t bounds[] = {INT64_MIN, -120, -60, 0,    60,   61,   119,      120,
                              121,       600,  601, 3000, 6000, 6001, INT64_MAX};
    const uint64_t pairs[][2] = {
        {1, 1}, {1, 2}, {2, 1}, {2, 2}, {0, 0}, {3, 3},
        {UINT64_C(1) << 40, UINT64_MAX}, {UINT64_MAX, UINT64_C(1) << 40},
    };
    const size_t nb = sizeof bounds / sizeof bounds[0];
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++)
        for (size_t i = 0; i < nb; i++)
            for (size_t k = 0; k < nb; k++)
                check_read(o, md, pairs[p][0], pairs[p][1], bounds[i], bounds[k]);
}

static void test_overlay_add_read(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(g_freeze_at);
    assert_non_null(o);
    assert_int_equal(tg_overlay_size(o), 0);
    model *md = build_overlay(o);
    if (!g_freeze_at)
        assert_int_equal(tg_overlay_size(o), 11); /* distinct (pair, minute) cells of ADDS */
    check_all_reads(o, md);

    /* spot checks written out by hand */
    void *lk = tg_overlay_rdlock(o, 1, 1);
    tg_delta *d = NULL;
    long n = tg_overlay_read(o, 1, 1, 0, 6001, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 5);
    const int64_t minutes[] = {6000, 3000, 600, 120, 60};
    for (long i = 0; i < n; i++)
        assert_int_equal(d[i].minute, minutes[i]);
    assert_dec_equal(d[2].sum, D("2"));
    assert_int_equal(d[2].count, 3);
    assert_dec_equal(d[3].sum, D("0.3"));
    assert_int_equal(d[3].count, 2);
    free(d);
    /* a pair whose deltas cancelled out still holds its (zero) delta, unless it was frozen */
    lk = tg_overlay_rdlock(o, 2, 1);
    n = tg_overlay_read(o, 2, 1, 600, 601, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, g_freeze_at ? 0 : 1);
    if (n) {
        assert_dec_equal(d[0].sum, 0);
        assert_int_equal(d[0].count, 0);
    }
    free(d);
    free(md);
    tg_overlay_free(o);
    tg_overlay_free(NULL);
}

typedef struct each_ctx {
    model *md;
    size_t visits, stop_after;
} each_ctx;

/* The overlay is visited and emptied shard by shard; these walk all shards. */
static int overlay_each_all(tg_overlay *o,
                            int (*fn)(void *ctx, uint64_t m, uint64_t c, const tg_delta *d),
                            void *ctx)
{
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++) {
        int rc = tg_overlay_each_in_shard(o, i, fn, ctx);
        if (rc)
            return rc;
    }
    return 0;
}

static void overlay_clear_all(tg_overlay *o)
{
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++) {
        tg_overlay_lock_shard(o, i);
        tg_overlay_clear_shard_locked(o, i);
        tg_overlay_unlock_shard(o, i);
    }
}

static int each_visit(void *ctx, uint64_t m, uint64_t c, const tg_delta *d)
{
    each_ctx *x = ctx;
    x->visits++;
    for (size_t i = 0; i < x->md->n; i++) {
        if (x->md->cell[i].m != m || x->md->cell[i].c != c || x->md->cell[i].d.minute != d->minute)
            continue;
        x->md->cell[i].visits++;
        assert_true(x->md->cell[i].d.sum == d->sum);
        assert_int_equal(x->md->cell[i].d.count, d->count);
        break;
    }
    if (x->stop_after && x->visits == x->stop_after)
        return 77;
    return 0;
}

static void test_overlay_each_and_clear(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(g_freeze_at);
    assert_non_null(o);
    model *md = build_overlay(o);

    each_ctx x = {md, 0, 0};
    assert_int_equal(overlay_each_all(o, each_visit, &x), 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < md->n; i++)
        nonzero += !zero_delta(&md->cell[i].d);
    if (g_freeze_at)
        assert_true(x.visits >= nonzero && x.visits <= md->n);
    else
        assert_int_equal(x.visits, md->n);
    for (size_t i = 0; i < md->n; i++)
        if (md->cell[i].visits != 1 && !(g_freeze_at && zero_delta(&md->cell[i].d) &&
                                         md->cell[i].visits == 0))
            fail_msg("delta (%llu,%llu,%lld) visited %d times", (unsigned long long)md->cell[i].m,
                     (unsigned long long)md->cell[i].c, (long long)md->cell[i].d.minute,
                     md->cell[i].visits);

    /* the first non-zero return stops the walk and is returned */
    each_ctx y = {md, 0, 4};
    assert_int_equal(overlay_each_all(o, each_visit, &y), 77);
    assert_int_equal(y.visits, 4);

    overlay_clear_all(o);
    assert_int_equal(tg_overlay_size(o), 0);
    each_ctx z = {md, 0, 0};
    assert_int_equal(overlay_each_all(o, each_visit, &z), 0);
    assert_int_equal(z.visits, 0);
    model empty;
    memset(&empty, 0, sizeof empty);
    check_all_reads(o, &empty);

    /* usable after a clear, and clearing an empty overlay is harmless */
    free(md);
    md = build_overlay(o);
    check_all_reads(o, md);
    overlay_clear_all(o);
    overlay_clear_all(o);
    assert_int_equal(tg_overlay_size(o), 0);
    free(md);
    tg_overlay_free(o);
}

/* Many pairs: every shard's bucket array grows several times while deltas are held. */
static void test_overlay_many_pairs(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(g_freeze_at);
    assert_non_null(o);
    const uint64_t npairs = 20000;
    for (int round = 0; round < 3; round++)
        for (uint64_t i = 0; i < npairs; i++) {
            uint64_t m = i % 37 + 1, c = i;
            int64_t minute = (int64_t)((i * 7 + (uint64_t)round * 3) % 5) * 60;
            assert_int_equal(tg_overlay_add(o, m, c, minute, (tg_dec)(i + 1), 1), 0);
        }
    size_t want_size = 0;
    for (uint64_t i = 0; i < npairs; i++) {
        uint64_t m = i % 37 + 1, c = i;
        void *lk = tg_overlay_rdlock(o, m, c);
        tg_delta *d = NULL;
        long n = tg_overlay_read(o, m, c, INT64_MIN, INT64_MAX, &d);
        tg_overlay_unlock(lk);
        assert_true(n >= 1 && n <= 3);
        want_size += (size_t)n;
        tg_dec sum = 0;
        int64_t count = 0;
        for (long k = 0; k < n; k++) {
            if (k)
                assert_true(d[k].minute < d[k - 1].minute);
            sum += d[k].sum;
            count += d[k].count;
        }
        assert_true(sum == (tg_dec)(3 * (i + 1)));
        assert_int_equal(count, 3);
        free(d);
        /* the swapped pair is a different pair */
        if (m != c) {
            lk = tg_overlay_rdlock(o, c, m);
            n = tg_overlay_read(o, c, m, INT64_MIN, INT64_MAX, &d);
            tg_overlay_unlock(lk);
            if (m % 37 + 1 != c) /* (c, m) was added only as i = m with i % 37 + 1 = c */
                assert_int_equal(n, 0);
            free(d);
        }
    }
    if (g_freeze_at) /* a minute in both parts counts twice */
        assert_true(tg_overlay_size(o) >= want_size);
    else
        assert_int_equal(tg_overlay_size(o), want_size);
    tg_overlay_free(o);
}

static void test_overlay_sum_overflow(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(0);
    assert_non_null(o);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, DEC_MAX, 1), 0);
    assert_int_equal(tg_overlay_add(o, 1, 1, 120, DEC_MIN, 1), 0);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, 1, 1), -1);
    assert_int_equal(tg_overlay_add(o, 1, 1, 120, -1, 1), -1);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, DEC_MAX, 5), -1);
    assert_int_equal(tg_overlay_size(o), 2);
    void *lk = tg_overlay_rdlock(o, 1, 1);
    tg_delta *d = NULL;
    long n = tg_overlay_read(o, 1, 1, 0, 1000, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 2);
    assert_dec_equal(d[0].sum, DEC_MIN);
    assert_int_equal(d[0].count, 1);
    assert_dec_equal(d[1].sum, DEC_MAX);
    assert_int_equal(d[1].count, 1);
    free(d);
    /* a value that fits is still accepted afterwards */
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, -1, 1), 0);
    lk = tg_overlay_rdlock(o, 1, 1);
    n = tg_overlay_read(o, 1, 1, 60, 61, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 1);
    assert_dec_equal(d[0].sum, DEC_MAX - 1);
    assert_int_equal(d[0].count, 2);
    free(d);
    tg_overlay_free(o);
}

struct minute_log {
    int64_t *minutes; /* room for 4 */
    size_t *n;
};

static int record_minute(void *ctx, uint64_t m, uint64_t c, const tg_delta *d)
{
    struct minute_log *l = ctx;
    (void)m, (void)c;
    if (*l->n < 4)
        l->minutes[*l->n] = d->minute;
    (*l->n)++;
    return 0;
}

/* Against a frozen delta an add is not checked (that would mean decoding the frozen part on
 * every add): both deltas are kept, apart, and the reader's checked addition refuses them. */
static void test_overlay_overflow_against_frozen(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(1);
    assert_non_null(o);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, DEC_MAX, 1), 0); /* frozen at once */
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, 1, 1), 0);       /* kept apart */
    assert_int_equal(tg_overlay_add(o, 1, 1, 120, 5, 1), 0);
    void *lk = tg_overlay_rdlock(o, 1, 1);
    tg_delta *d = NULL;
    long n = tg_overlay_read(o, 1, 1, 0, 1000, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 3);
    assert_int_equal(d[0].minute, 120);
    assert_int_equal(d[1].minute, 60);
    assert_int_equal(d[2].minute, 60);
    assert_true((d[1].sum == DEC_MAX && d[2].sum == 1) || (d[1].sum == 1 && d[2].sum == DEC_MAX));
    free(d);
    /* a fold sees the same three, in minute order */
    int64_t minutes[4] = {0};
    size_t seen = 0;
    struct minute_log log = {minutes, &seen};
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++)
        assert_int_equal(tg_overlay_each_in_shard(o, i, record_minute, &log), 0);
    assert_int_equal(seen, 3);
    assert_int_equal(minutes[0], 60);
    assert_int_equal(minutes[1], 60);
    assert_int_equal(minutes[2], 120);
    tg_overlay_free(o);
}

/* The count is part of the delta too: a count overflow must also leave it unchanged. */
static void test_overlay_count_overflow(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(0);
    assert_non_null(o);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, TG_DEC_ONE, INT64_MAX), 0);
    assert_int_equal(tg_overlay_add(o, 1, 1, 60, TG_DEC_ONE, 1), -1);
    void *lk = tg_overlay_rdlock(o, 1, 1);
    tg_delta *d = NULL;
    long n = tg_overlay_read(o, 1, 1, 0, 1000, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 1);
    tg_delta got = d[0];
    free(d);
    tg_overlay_free(o);
    assert_int_equal(got.count, INT64_MAX);
    assert_dec_equal(got.sum, TG_DEC_ONE); /* not 2: the refused add changed nothing */
}

/* ---- concurrency smoke test ---- */

#define CONC_ADDS 200000
#define CONC_M 7
#define CONC_C 9
#define HALF ((tg_dec)500000000000LL) /* 0.5 */

typedef struct conc {
    tg_overlay *o;
    int done;           /* atomic */
    tg_dec added;       /* written by the writer, read after join */
    int64_t added_count;
    long reads[2];
    int bad[2];
} conc;

static void *conc_writer(void *arg)
{
    conc *x = arg;
    tg_dec total = 0;
    int64_t count = 0;
    for (long i = 0; i < CONC_ADDS; i++) {
        int64_t k = 1 + i % 3;
        /* new minutes (inserts in the middle and at both ends) and repeats */
        int64_t minute = ((i * 7919) % 1500) * 60;
        if (tg_overlay_add(x->o, CONC_M, CONC_C, minute, k * HALF, k) != 0) {
            __atomic_store_n(&x->done, -1, __ATOMIC_SEQ_CST);
            return NULL;
        }
        total += k * HALF;
        count += k;
        /* other pairs: some share the shard, and their shard grows meanwhile */
        if (i % 10 == 0)
            tg_overlay_add(x->o, (uint64_t)i, CONC_C, minute, 1, 1);
    }
    x->added = total;
    x->added_count = count;
    __atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

typedef struct reader_arg {
    conc *x;
    int id;
} reader_arg;

static void *conc_reader(void *arg)
{
    reader_arg *ra = arg;
    conc *x = ra->x;
    tg_dec last = 0;
    for (;;) {
        int done = __atomic_load_n(&x->done, __ATOMIC_SEQ_CST);
        void *lk = tg_overlay_rdlock(x->o, CONC_M, CONC_C);
        tg_delta *d = NULL;
        long n = tg_overlay_read(x->o, CONC_M, CONC_C, INT64_MIN, INT64_MAX, &d);
        tg_overlay_unlock(lk);
        tg_dec sum = 0;
        for (long k = 0; k < n; k++) {
            if ((k && d[k].minute >= d[k - 1].minute) || d[k].sum != d[k].count * HALF)
                x->bad[ra->id]++;
            sum += d[k].sum;
        }
        if (n < 0 || sum < last) /* only positive deltas: the total never goes back */
            x->bad[ra->id]++;
        last = sum;
        free(d);
        x->reads[ra->id]++;
        if (done)
            break;
    }
    return NULL;
}

static void test_overlay_concurrent_readers(void **state)
{
    (void)state;
    conc x;
    memset(&x, 0, sizeof x);
    x.o = tg_overlay_new(16); /* the pair's shard freezes again and again while read */
    assert_non_null(x.o);
    pthread_t w, r[2];
    reader_arg ra[2] = {{&x, 0}, {&x, 1}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&r[i], NULL, conc_reader, &ra[i]), 0);
    assert_int_equal(pthread_create(&w, NULL, conc_writer, &x), 0);
    assert_int_equal(pthread_join(w, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(r[i], NULL), 0);
    assert_int_equal(x.done, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(x.bad[i], 0);
        assert_true(x.reads[i] > 0);
    }

    void *lk = tg_overlay_rdlock(x.o, CONC_M, CONC_C);
    tg_delta *d = NULL;
    long n = tg_overlay_read(x.o, CONC_M, CONC_C, INT64_MIN, INT64_MAX, &d);
    tg_overlay_unlock(lk);
    assert_int_equal(n, 1500);
    tg_dec sum = 0;
    int64_t count = 0;
    for (long k = 0; k < n; k++) {
        sum += d[k].sum;
        count += d[k].count;
    }
    assert_dec_equal(sum, x.added);
    assert_int_equal(count, x.added_count);
    int64_t want_count = 0;
    for (long i = 0; i < CONC_ADDS; i++)
        want_count += 1 + i % 3;
    assert_int_equal(count, want_count);
    assert_dec_equal(sum, want_count * HALF);
    free(d);
    tg_overlay_free(x.o);
}

/* ---- both parts of a shard: a random walk against a dense model ---- */

#define WALK_PAIRS 12
#define WALK_MINUTES 600
#define WALK_BASE INT64_C(1764547200) /* a UTC midnight */

typedef struct walk_model {
    tg_dec sum[WALK_PAIRS][WALK_MINUTES];
    int64_t count[WALK_PAIRS][WALK_MINUTES];
    int shard_of[WALK_PAIRS]; /* learnt from the walks, -1 until seen */
} walk_model;

static uint64_t walk_m(int p) { return (uint64_t)(p % 3 + 1); }
static uint64_t walk_c(int p) { return (uint64_t)(p * 7919 + 5); }

static int walk_pair(uint64_t m, uint64_t c)
{
    for (int p = 0; p < WALK_PAIRS; p++)
        if (walk_m(p) == m && walk_c(p) == c)
            return p;
    return -1;
}

typedef struct walk_visit {
    walk_model *md;
    int shard;
    bool seen[WALK_PAIRS][WALK_MINUTES];
    int64_t last_minute[WALK_PAIRS];
} walk_visit;

static int walk_each(void *ctx, uint64_t m, uint64_t c, const tg_delta *d)
{
    walk_visit *v = ctx;
    int p = walk_pair(m, c);
    assert_true(p >= 0);
    int64_t k = (d->minute - WALK_BASE) / 60;
    assert_true(k >= 0 && k < WALK_MINUTES && d->minute == WALK_BASE + k * 60);
    assert_false(v->seen[p][k]);             /* one delta a minute */
    assert_true(d->minute > v->last_minute[p]); /* in minute order */
    v->last_minute[p] = d->minute;
    v->seen[p][k] = true;
    assert_true(d->sum == v->md->sum[p][k]);
    assert_int_equal(d->count, v->md->count[p][k]);
    if (v->md->shard_of[p] < 0)
        v->md->shard_of[p] = v->shard;
    assert_int_equal(v->md->shard_of[p], v->shard);
    return 0;
}

/* Walks the given shards (all when shard < 0) and checks that every non-zero model cell of
 * the pairs walked was visited. */
static void walk_check(tg_overlay *o, walk_model *md, int shard)
{
    walk_visit *v = calloc(1, sizeof *v);
    assert_non_null(v);
    v->md = md;
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++) {
        if (shard >= 0 && i != shard)
            continue;
        v->shard = i;
        for (int p = 0; p < WALK_PAIRS; p++)
            v->last_minute[p] = INT64_MIN;
        assert_int_equal(tg_overlay_each_in_shard(o, i, walk_each, v), 0);
    }
    for (int p = 0; p < WALK_PAIRS; p++) {
        if (shard >= 0 && md->shard_of[p] != shard)
            continue;
        for (int k = 0; k < WALK_MINUTES; k++)
            if (md->sum[p][k] != 0 || md->count[p][k] != 0)
                assert_true(v->seen[p][k]);
    }
    free(v);
}

static void walk_read(tg_overlay *o, const walk_model *md, int p, int from, int to)
{
    void *lk = tg_overlay_rdlock(o, walk_m(p), walk_c(p));
    tg_delta *d = NULL;
    long n = tg_overlay_read(o, walk_m(p), walk_c(p), WALK_BASE + from * 60,
                             WALK_BASE + to * 60, &d);
    tg_overlay_unlock(lk);
    assert_true(n >= 0);
    long i = 0;
    for (int k = to - 1; k >= from; k--) { /* newest first; zero cells may be absent */
        while (i < n && zero_delta(&d[i]) && d[i].minute > WALK_BASE + k * 60)
            i++;
        bool zero = md->sum[p][k] == 0 && md->count[p][k] == 0;
        if (i < n && d[i].minute == WALK_BASE + k * 60) {
            assert_true(d[i].sum == md->sum[p][k]);
            assert_int_equal(d[i].count, md->count[p][k]);
            i++;
        } else if (!zero) {
            fail_msg("pair %d minute %d: missing from the read", p, k);
        }
    }
    assert_int_equal(i, n);
    free(d);
}

static void test_overlay_frozen_walk(void **state)
{
    (void)state;
    tg_overlay *o = tg_overlay_new(64);
    assert_non_null(o);
    walk_model *md = calloc(1, sizeof *md);
    assert_non_null(md);
    for (int p = 0; p < WALK_PAIRS; p++)
        md->shard_of[p] = -1;
    walk_check(o, md, -1);
    uint64_t r = 0x9E3779B97F4A7C15ULL;
    for (int step = 0; step < 200000; step++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int p = (int)(r % WALK_PAIRS), k = (int)((r >> 8) % WALK_MINUTES);
        int op = (int)((r >> 24) % 1000);
        if (op < 800) {
            /* mostly usage; one in eight a cancellation-like negative delta */
            int64_t units = (int64_t)((r >> 34) % 25) - 3;
            int64_t count = units < 0 ? -1 : 1;
            tg_dec sum = (tg_dec)units * 1000000000; /* thousandths */
            assert_int_equal(tg_overlay_add(o, walk_m(p), walk_c(p), WALK_BASE + k * 60, sum,
                                            count),
                             0);
            md->sum[p][k] += sum;
            md->count[p][k] += count;
        } else if (op < 980) {
            int k2 = (int)((r >> 40) % (WALK_MINUTES + 1));
            walk_read(o, md, p, k < k2 ? k : k2, k < k2 ? k2 : k);
        } else if (op < 998) {
            walk_check(o, md, md->shard_of[p]);
        } else {
            walk_check(o, md, -1); /* learn every pair's shard */
            int sh = md->shard_of[p];
            if (sh < 0)
                continue;
            tg_overlay_lock_shard(o, sh);
            tg_overlay_clear_shard_locked(o, sh);
            tg_overlay_unlock_shard(o, sh);
            for (int q = 0; q < WALK_PAIRS; q++)
                if (md->shard_of[q] == sh)
                    for (int m = 0; m < WALK_MINUTES; m++)
                        md->sum[q][m] = 0, md->count[q][m] = 0;
        }
    }
    walk_check(o, md, -1);
    for (int p = 0; p < WALK_PAIRS; p++)
        walk_read(o, md, p, 0, WALK_MINUTES);
    /* the frozen part is compact: the model's deltas take less than half the memory frozen
     * than in an overlay that never freezes */
    tg_overlay *frozen = tg_overlay_new(64), *unfrozen = tg_overlay_new(SIZE_MAX);
    assert_non_null(frozen);
    assert_non_null(unfrozen);
    for (int p = 0; p < WALK_PAIRS; p++)
        for (int k = 0; k < WALK_MINUTES; k++)
            if (md->sum[p][k] != 0 || md->count[p][k] != 0) {
                assert_int_equal(tg_overlay_add(frozen, walk_m(p), walk_c(p), WALK_BASE + k * 60,
                                                md->sum[p][k], md->count[p][k]),
                                 0);
                assert_int_equal(tg_overlay_add(unfrozen, walk_m(p), walk_c(p),
                                                WALK_BASE + k * 60, md->sum[p][k],
                                                md->count[p][k]),
                                 0);
            }
    assert_int_equal(tg_overlay_size(frozen), tg_overlay_size(unfrozen));
    assert_true(tg_overlay_size(frozen) > 1000);
    assert_true(tg_overlay_bytes(frozen) * 2 < tg_overlay_bytes(unfrozen));
    tg_overlay_free(frozen);
    tg_overlay_free(unfrozen);
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++) {
        tg_overlay_lock_shard(o, i);
        tg_overlay_clear_shard_locked(o, i);
        tg_overlay_unlock_shard(o, i);
    }
    assert_int_equal(tg_overlay_size(o), 0);
    free(md);
    tg_overlay_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedupe_hash_keyed),
        cmocka_unit_test(test_dedupe_locator_limits),
        cmocka_unit_test(test_dedupe_same_hash_twice),
        cmocka_unit_test(test_dedupe_prefetch_any_hash),
        cmocka_unit_test(test_dedupe_two_million),
        cmocka_unit_test(test_dedupe_huge_arrays),
        cmocka_unit_test(test_block_round_trip),
        cmocka_unit_test(test_block_empty_and_single),
        cmocka_unit_test(test_block_truncated_every_length),
        cmocka_unit_test(test_block_bad_version),
        cmocka_unit_test(test_block_crafted_corrupt),
        cmocka_unit_test(test_block_extreme_timestamps),
        cmocka_unit_test(test_block_cap),
        cmocka_unit_test_setup(test_overlay_add_read, freeze_default),
        cmocka_unit_test_setup(test_overlay_each_and_clear, freeze_default),
        cmocka_unit_test_setup(test_overlay_many_pairs, freeze_default),
        cmocka_unit_test_setup(test_overlay_add_read, freeze_early),
        cmocka_unit_test_setup(test_overlay_each_and_clear, freeze_early),
        cmocka_unit_test_setup(test_overlay_many_pairs, freeze_early),
        cmocka_unit_test(test_overlay_frozen_walk),
        cmocka_unit_test(test_overlay_sum_overflow),
        cmocka_unit_test(test_overlay_count_overflow),
        cmocka_unit_test(test_overlay_overflow_against_frozen),
        cmocka_unit_test(test_overlay_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
