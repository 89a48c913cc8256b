/* test_dedupe.c -- unit tests for core/dedupe.h: inserts, lookups and pruning.
 *
 * The identifier index is open addressing with linear probing, and pruning deletes entries in
 * place by backward shift (dedupe.c). A wrong shift leaves a kept entry where its lookup
 * cannot reach it, and that identifier's retry would then be counted twice: so every test
 * checks every entry, kept or removed, by lookup after each prune, at sizes where runs wrap
 * around the end of a partition's array and partitions have grown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/dedupe.h"

typedef struct entries {
    uint64_t *h, *loc;
    size_t n;
} entries;

/* n entries of pseudo-random hashes (xorshift, from seed) and locators 1..100,000. */
static entries make_entries(size_t n, uint64_t seed)
{
    entries e = {calloc(n, sizeof *e.h), calloc(n, sizeof *e.loc), n};
    assert_non_null(e.h);
    assert_non_null(e.loc);
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        e.h[i] = x;
        e.loc[i] = 1 + (x >> 40) % 100000;
    }
    return e;
}

static bool has(const tg_dedupe *d, uint64_t h, uint64_t loc)
{
    uint64_t out[TG_DEDUPE_MAX_CANDIDATES];
    int n = tg_dedupe_find(d, h, out, TG_DEDUPE_MAX_CANDIDATES);
    for (int i = 0; i < n; i++)
        if (out[i] == loc)
            return true;
    return false;
}

/* keep(): locators whose residue mod 7 is above the cut. */
static bool above_cut(uint64_t loc, void *ctx)
{
    return loc % 7 > *(uint64_t *)ctx;
}

static void test_insert_then_find(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    entries e = make_entries(300000, 88172645463325252ULL);
    for (size_t i = 0; i < e.n; i++)
        assert_int_equal(tg_dedupe_insert(d, e.h[i], e.loc[i]), 0);
    assert_int_equal(tg_dedupe_count(d), e.n);
    for (size_t i = 0; i < e.n; i++)
        assert_true(has(d, e.h[i], e.loc[i]));
    assert_int_equal(tg_dedupe_insert(d, 1, 0), -1); /* locators start at 1 */
    assert_int_equal(tg_dedupe_insert(d, 1, TG_DEDUPE_ROW + 1), -1);
    tg_dedupe_free(d);
    free(e.h);
    free(e.loc);
}

/* Prunes the classes 0, 1 and 2 in turn at sizes from one page a partition to grown ones;
 * after each prune every kept entry is found, no removed one is, and the count agrees. */
static void test_prune_keeps_every_other_entry_reachable(void **state)
{
    (void)state;
    for (size_t n = 1000; n <= 301000; n += 50000) {
        tg_dedupe *d = tg_dedupe_new();
        assert_non_null(d);
        entries e = make_entries(n, 0x9E3779B97F4A7C15ULL ^ n);
        for (size_t i = 0; i < e.n; i++)
            assert_int_equal(tg_dedupe_insert(d, e.h[i], e.loc[i]), 0);
        size_t before = tg_dedupe_count(d);
        for (uint64_t cut = 0; cut < 3; cut++) {
            size_t removed = 0;
            for (int p = 0; p < TG_DEDUPE_PARTITIONS; p++)
                removed += tg_dedupe_prune(d, p, above_cut, &cut);
            size_t kept = 0, wrong = 0;
            for (size_t i = 0; i < e.n; i++) {
                bool keep = e.loc[i] % 7 > cut;
                kept += keep;
                wrong += has(d, e.h[i], e.loc[i]) != keep;
            }
            assert_int_equal(wrong, 0);
            assert_int_equal(tg_dedupe_count(d), kept);
            assert_int_equal(before - removed, kept);
            before = kept;
        }
        /* the space pruned is used again */
        for (size_t i = 0; i < e.n; i++)
            if (e.loc[i] % 7 <= 2)
                assert_int_equal(tg_dedupe_insert(d, e.h[i], e.loc[i]), 0);
        assert_int_equal(tg_dedupe_count(d), e.n);
        for (size_t i = 0; i < e.n; i++)
            assert_true(has(d, e.h[i], e.loc[i]));
        tg_dedupe_free(d);
        free(e.h);
        free(e.loc);
    }
}

static bool keep_none(uint64_t loc, void *ctx)
{
    (void)loc;
    (void)ctx;
    return false;
}

static void test_prune_everything(void **state)
{
    (void)state;
    tg_dedupe *d = tg_dedupe_new();
    assert_non_null(d);
    entries e = make_entries(100000, 12345);
    for (size_t i = 0; i < e.n; i++)
        assert_int_equal(tg_dedupe_insert(d, e.h[i], e.loc[i]), 0);
    size_t removed = 0;
    for (int p = 0; p < TG_DEDUPE_PARTITIONS; p++)
        removed += tg_dedupe_prune(d, p, keep_none, NULL);
    assert_int_equal(removed, e.n);
    assert_int_equal(tg_dedupe_count(d), 0);
    for (size_t i = 0; i < e.n; i++)
        assert_false(has(d, e.h[i], e.loc[i]));
    tg_dedupe_free(d);
    free(e.h);
    free(e.loc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_then_find),
        cmocka_unit_test(test_prune_keeps_every_other_entry_reachable),
        cmocka_unit_test(test_prune_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
