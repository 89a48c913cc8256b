/* test_money.c -- unit tests for core/money.h.
 *
 * Every invoice line goes through the 256-bit accumulator and its single rounding, so these
 * tests pin the known amounts of token billing and proration, rounding half away from zero at
 * full 10^-24 precision, overflow at the exact 256-bit and int64 limits, an int128 reference
 * over random values, transform_quantity's whole-number division and the currency table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/money.h"

#define DEC_MAX ((tg_dec)(((unsigned __int128)1 << 127) - 1))
#define DEC_MIN (-DEC_MAX - 1)

static tg_dec dec(const char *s)
{
    tg_dec d = 0;
    if (tg_dec_parse(s, strlen(s), &d) != 0)
        fail_msg("bad decimal literal \"%s\"", s);
    return d;
}

/* Rounds acc with den and checks the result. */
static void assert_rounds_to(const tg_money_acc *acc, int64_t den, int64_t want)
{
    int64_t got = 424242;
    if (tg_money_acc_round(acc, den, &got) != 0)
        fail_msg("round(den %lld) failed, want %lld", (long long)den, (long long)want);
    if (got != want)
        fail_msg("round(den %lld) = %lld, want %lld", (long long)den, (long long)got,
                 (long long)want);
}

static void assert_limbs(const tg_money_acc *acc, uint64_t l0, uint64_t l1, uint64_t l2,
                         uint64_t l3)
{
    assert_int_equal(acc->limb[0], l0);
    assert_int_equal(acc->limb[1], l1);
    assert_int_equal(acc->limb[2], l2);
    assert_int_equal(acc->limb[3], l3);
}

/* unit_amount_decimal 0.2 cents per token: 691,357.8 -> 691358 and 500,000.2 -> 500000. */
static void test_token_billing(void **state)
{
    (void)state;
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, dec("0.2"), dec("3456789")), 0);
    assert_rounds_to(&acc, 1, 691358);

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, dec("2500001"), dec("0.2")), 0);
    assert_rounds_to(&acc, 1, 500000);
}

static void test_round_half_away_from_zero(void **state)
{
    (void)state;
    const struct {
        const char *amount;
        int64_t want;
    } cases[] = {
        {"0.5", 1},  {"-0.5", -1}, {"2.5", 3}, {"-2.5", -3}, {"1.5", 2},     {"999.5", 1000},
        {"0.4", 0},  {"-0.4", 0},  {"0", 0},   {"7", 7},     {"0.499999999999", 0},
        {"-0.500000000001", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_money_acc acc = tg_money_acc_zero();
        assert_int_equal(tg_money_acc_add(&acc, dec(cases[i].amount)), 0);
        int64_t got = 99;
        assert_int_equal(tg_money_acc_round(&acc, 1, &got), 0);
        if (got != cases[i].want)
            fail_msg("round(%s) = %lld, want %lld", cases[i].amount, (long long)got,
                     (long long)cases[i].want);
    }
}

/* Digits beyond the 12th count: 0.5 - 10^-24 rounds down, and the last 10^-24 tips it up. */
static void test_round_uses_all_24_digits(void **state)
{
    (void)state;
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add(&acc, dec("0.499999999999")), 0);
    /* 10^-12 * 0.999999999999 = 0.999999999999 * 10^-12: acc = 0.5 - 10^-24 */
    assert_int_equal(tg_money_acc_add_product(&acc, 1, dec("0.999999999999")), 0);
    assert_rounds_to(&acc, 1, 0);
    assert_int_equal(tg_money_acc_add_product(&acc, 1, 1), 0); /* + 10^-24 */
    assert_rounds_to(&acc, 1, 1);
    assert_int_equal(tg_money_acc_mul_int(&acc, -1), 0);
    assert_rounds_to(&acc, 1, -1);
}

/* 1000 cents for 15 of 30 days, and the thirds that need rounding. */
static void test_proration(void **state)
{
    (void)state;
    const struct {
        int64_t amount, num, den, want;
    } cases[] = {
        {1000, 15, 30, 500}, {1000, 1, 3, 333},  {2000, 1, 3, 667}, {-2000, 1, 3, -667},
        {2000, -1, 3, -667}, {1000, 2, 3, 667},  {1000, 0, 30, 0},  {999, 1, 2, 500},
        {1, 1, 2, 1},        {1, 1, 3, 0},       {-1, 1, 2, -1},    {1000, 1296000, 2592000, 500},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_money_acc acc = tg_money_acc_zero();
        assert_int_equal(tg_money_acc_add(&acc, tg_dec_from_int(cases[i].amount)), 0);
        assert_int_equal(tg_money_acc_mul_int(&acc, cases[i].num), 0);
        int64_t got = 0;
        assert_int_equal(tg_money_acc_round(&acc, cases[i].den, &got), 0);
        if (got != cases[i].want)
            fail_msg("%lld * %lld / %lld = %lld, want %lld", (long long)cases[i].amount,
                     (long long)cases[i].num, (long long)cases[i].den, (long long)got,
                     (long long)cases[i].want);
    }
}

/* The product is exact in all 256 bits, for every sign combination. */
static void test_product_limbs(void **state)
{
    (void)state;
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MAX, DEC_MAX), 0);
    assert_limbs(&acc, 1, 0, UINT64_MAX, 0x3fffffffffffffffULL); /* 2^254 - 2^128 + 1 */

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MAX), 0);
    assert_limbs(&acc, 0, 0x8000000000000000ULL, 0, 0xc000000000000000ULL);

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MIN), 0);
    assert_limbs(&acc, 0, 0, 0, 0x4000000000000000ULL); /* 2^254 */

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, -3, 5), 0);
    assert_limbs(&acc, (uint64_t)-15, UINT64_MAX, UINT64_MAX, UINT64_MAX);
    assert_int_equal(tg_money_acc_add_product(&acc, -3, -5), 0);
    assert_limbs(&acc, 0, 0, 0, 0);
}

static void test_overflow(void **state)
{
    (void)state;
    /* 2^254 + 2^254 = 2^255 is one past the largest value. */
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MIN), 0);
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MIN), -1);

    /* -2^254 - 2^254 = -2^255 is the smallest value; one less overflows. */
    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MAX), 0);
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, 1), 0); /* -2^254 */
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, DEC_MAX), 0);
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MIN, 1), 0); /* -2^255 */
    assert_limbs(&acc, 0, 0, 0, 0x8000000000000000ULL);
    tg_money_acc at_min = acc;
    assert_int_equal(tg_money_acc_add_product(&acc, -1, 1), -1);
    acc = at_min;
    assert_int_equal(tg_money_acc_mul_int(&acc, 1), 0);
    assert_int_equal(tg_money_acc_mul_int(&acc, -1), -1); /* 2^255 does not fit */
    acc = at_min;
    assert_int_equal(tg_money_acc_add(&acc, -1), -1);

    /* mul_int: 2^254 * 2 overflows, 2^254 * -2 = -2^255 fits. */
    tg_money_acc big = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&big, DEC_MIN, DEC_MIN), 0);
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, 2), -1);
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, -2), 0);
    assert_limbs(&acc, 0, 0, 0, 0x8000000000000000ULL);
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, INT64_MIN), -1);
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, 0), 0);
    assert_limbs(&acc, 0, 0, 0, 0);

    /* 2^254 * 4 = 2^256 wraps to 0: only the carry out of the top limb shows it. */
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, 4), -1);
    acc = big;
    assert_int_equal(tg_money_acc_mul_int(&acc, -4), -1);
}

static void test_round_limits(void **state)
{
    (void)state;
    int64_t got = 0;
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add(&acc, tg_dec_from_int(INT64_MAX)), 0);
    assert_rounds_to(&acc, 1, INT64_MAX);
    assert_int_equal(tg_money_acc_add(&acc, dec("0.499999999999")), 0);
    assert_rounds_to(&acc, 1, INT64_MAX);
    assert_int_equal(tg_money_acc_add(&acc, 1), 0); /* INT64_MAX + 0.5 rounds past it */
    assert_int_equal(tg_money_acc_round(&acc, 1, &got), -1);

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add(&acc, tg_dec_from_int(INT64_MIN)), 0);
    assert_rounds_to(&acc, 1, INT64_MIN);
    assert_int_equal(tg_money_acc_add(&acc, dec("-0.5")), 0);
    assert_int_equal(tg_money_acc_round(&acc, 1, &got), -1);

    /* Huge products and the extreme accumulator values. */
    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add_product(&acc, DEC_MAX, DEC_MAX), 0);
    assert_int_equal(tg_money_acc_round(&acc, 1, &got), -1);
    assert_int_equal(tg_money_acc_round(&acc, INT64_MAX, &got), -1);
    assert_int_equal(tg_money_acc_mul_int(&acc, -1), 0);
    assert_int_equal(tg_money_acc_round(&acc, INT64_MAX, &got), -1);

    /* den beyond 128 bits once scaled by 10^24 still divides exactly. */
    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add(&acc, tg_dec_from_int(INT64_MAX)), 0);
    assert_int_equal(tg_money_acc_mul_int(&acc, INT64_MAX), 0);
    assert_rounds_to(&acc, INT64_MAX, INT64_MAX);
    assert_int_equal(tg_money_acc_add(&acc, tg_dec_from_int(INT64_MAX / 2)), 0);
    assert_rounds_to(&acc, INT64_MAX, INT64_MAX); /* + 0.4999... */
    assert_int_equal(tg_money_acc_add(&acc, TG_DEC_ONE), 0);
    assert_int_equal(tg_money_acc_round(&acc, INT64_MAX, &got), -1); /* + 0.5000... */

    acc = tg_money_acc_zero();
    assert_int_equal(tg_money_acc_add(&acc, TG_DEC_ONE), 0);
    assert_int_equal(tg_money_acc_round(&acc, 0, &got), -1);
    assert_int_equal(tg_money_acc_round(&acc, -30, &got), -1);
    assert_rounds_to(&acc, INT64_MAX, 0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A signed value of up to `bits` magnitude bits, biased toward small and round numbers. */
static int64_t rng_signed(int bits)
{
    int64_t v = (int64_t)(rng() >> (64 - (1 + rng() % (unsigned)bits)));
    return rng() & 1 ? -v : v;
}

/* Where everything fits in __int128, the accumulator agrees with plain arithmetic. */
static void test_matches_int128_reference(void **state)
{
    (void)state;
    for (int i = 0; i < 200000; i++) {
        int64_t a = rng_signed(50), b = rng_signed(50), num = rng_signed(20);
        int64_t den = 1 + (int64_t)(rng() % (i % 2 ? 3 : 1000000));
        __int128 p = (__int128)a * b * num; /* < 2^120 */
        unsigned __int128 mag = p < 0 ? (unsigned __int128)-p : (unsigned __int128)p;
        unsigned __int128 d = (unsigned __int128)den * 1000000000000ULL * 1000000000000ULL;
        unsigned __int128 q = mag / d;
        if ((mag % d) * 2 >= d)
            q++;
        int64_t want = p < 0 ? -(int64_t)q : (int64_t)q;

        tg_money_acc acc = tg_money_acc_zero();
        assert_int_equal(tg_money_acc_add_product(&acc, a, b), 0);
        assert_int_equal(tg_money_acc_mul_int(&acc, num), 0);
        int64_t got = 0;
        assert_int_equal(tg_money_acc_round(&acc, den, &got), 0);
        if (got != want)
            fail_msg("%lld * %lld * %lld / %lld: got %lld, want %lld", (long long)a,
                     (long long)b, (long long)num, (long long)den, (long long)got,
                     (long long)want);
    }
}

static void test_divide_round(void **state)
{
    (void)state;
    const struct {
        const char *q;
        int64_t divide_by;
        bool up;
        const char *want;
    } cases[] = {
        {"150", 60, true, "3"},
        {"150", 60, false, "2"},
        {"120", 60, true, "2"},
        {"120", 60, false, "2"},
        {"0", 60, true, "0"},
        {"0.5", 1, true, "1"},
        {"0.5", 1, false, "0"},
        {"-150", 60, true, "-3"},
        {"-150", 60, false, "-2"},
        {"59.999999999999", 60, true, "1"},
        {"60.000000000001", 60, true, "2"},
        {"60.000000000001", 60, false, "1"},
        {"7", 1, true, "7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_dec got = 77;
        assert_int_equal(tg_dec_divide_round(dec(cases[i].q), cases[i].divide_by, cases[i].up,
                                             &got),
                         0);
        if (got != dec(cases[i].want)) {
            char buf[TG_DEC_STR_MAX];
            tg_dec_format(got, buf);
            fail_msg("%s / %lld round %s = %s, want %s", cases[i].q,
                     (long long)cases[i].divide_by, cases[i].up ? "up" : "down", buf,
                     cases[i].want);
        }
    }
    tg_dec got = 0;
    assert_int_equal(tg_dec_divide_round(dec("1"), 0, true, &got), -1);
    assert_int_equal(tg_dec_divide_round(dec("1"), -5, false, &got), -1);
    /* Rounding DEC_MAX up to a whole number leaves the range; down stays inside. */
    assert_int_equal(tg_dec_divide_round(DEC_MAX, 1, true, &got), -1);
    assert_int_equal(tg_dec_divide_round(DEC_MAX, 1, false, &got), 0);
    assert_true(got == DEC_MAX - DEC_MAX % TG_DEC_ONE);
    assert_int_equal(tg_dec_divide_round(DEC_MIN, 1, true, &got), -1);
    assert_int_equal(tg_dec_divide_round(DEC_MIN, 1, false, &got), 0);
    assert_true(got == DEC_MIN - DEC_MIN % TG_DEC_ONE);
    assert_int_equal(tg_dec_divide_round(DEC_MAX, INT64_MAX, true, &got), 0);
}

static void test_trunc(void **state)
{
    (void)state;
    int64_t got = 0;
    assert_int_equal(tg_dec_trunc(dec("12.7"), &got), 0);
    assert_int_equal(got, 12);
    assert_int_equal(tg_dec_trunc(dec("-12.7"), &got), 0);
    assert_int_equal(got, -12);
    assert_int_equal(tg_dec_trunc(dec("0.999999999999"), &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(tg_dec_trunc(dec("9223372036854775807.999999999999"), &got), 0);
    assert_true(got == INT64_MAX);
    assert_int_equal(tg_dec_trunc(dec("-9223372036854775808.999999999999"), &got), 0);
    assert_true(got == INT64_MIN);
    got = 5;
    assert_int_equal(tg_dec_trunc(dec("9223372036854775808"), &got), -1);
    assert_int_equal(tg_dec_trunc(dec("-9223372036854775809"), &got), -1);
    assert_int_equal(tg_dec_trunc(DEC_MAX, &got), -1);
    assert_int_equal(got, 5);
}

static void test_currencies(void **state)
{
    (void)state;
    const char *zero[] = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
                          "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"};
    const char *three[] = {"bhd", "jod", "kwd", "omr", "tnd"};
    const char *two[] = {"usd", "eur", "gbp", "cad", "aud", "chf", "sek", "nok", "dkk",
                         "pln", "czk", "huf", "inr", "brl", "mxn", "sgd", "hkd", "nzd",
                         "cny", "zar", "aed", "isk", "twd", "ils", "thb", "try", "zmw"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        if (!tg_currency_known(zero[i]) || tg_currency_exponent(zero[i]) != 0)
            fail_msg("%s: want a known zero-decimal currency", zero[i]);
    }
    for (size_t i = 0; i < sizeof three / sizeof three[0]; i++) {
        if (!tg_currency_known(three[i]) || tg_currency_exponent(three[i]) != 3)
            fail_msg("%s: want a known three-decimal currency", three[i]);
    }
    for (size_t i = 0; i < sizeof two / sizeof two[0]; i++) {
        if (!tg_currency_known(two[i]) || tg_currency_exponent(two[i]) != 2)
            fail_msg("%s: want a known two-decimal currency", two[i]);
    }
    const char *unknown[] = {"USD", "Usd", "xyz", "", "us", "usdd", "usd ", " usd", "eu",
                             "aaa", "zzz", "xau", "btc"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        if (tg_currency_known(unknown[i]))
            fail_msg("\"%s\" accepted as a currency", unknown[i]);
        assert_int_equal(tg_currency_exponent(unknown[i]), 2);
    }
    /* The table is searched by bisection: a misordered entry would hide some codes. */
    int known = 0;
    char code[4] = {0};
    for (code[0] = 'a'; code[0] <= 'z'; code[0]++)
        for (code[1] = 'a'; code[1] <= 'z'; code[1]++)
            for (code[2] = 'a'; code[2] <= 'z'; code[2]++)
                known += tg_currency_known(code);
    assert_int_equal(known, 140);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_billing),
        cmocka_unit_test(test_round_half_away_from_zero),
        cmocka_unit_test(test_round_uses_all_24_digits),
        cmocka_unit_test(test_proration),
        cmocka_unit_test(test_product_limbs),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_round_limits),
        cmocka_unit_test(test_matches_int128_reference),
        cmocka_unit_test(test_divide_round),
        cmocka_unit_test(test_trunc),
        cmocka_unit_test(test_currencies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
