/* test_decimal.c -- unit tests for core/decimal.h.
 *
 * Every usage value and every aggregate Tollgate reports goes through tg_dec, so these tests
 * pin the exact grammar the parser accepts (plain -?digits[.digits], at most 26 integer and
 * 12 fraction digits), the shortest exact formatting, checked arithmetic at the int128 limits
 * and the 16-byte storage encoding. A regression here silently changes billed amounts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/decimal.h"

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

/* Builds 10^n as a decimal count of units (n <= 38). */
static tg_dec pow10_units(int n)
{
    tg_dec v = 1;
    for (int i = 0; i < n; i++)
        v *= 10;
    return v;
}

static void test_parse_accepts(void **state)
{
    (void)state;
    static char digits26[27];
    memset(digits26, '9', 26);
    digits26[26] = '\0';
    const struct {
        const char *in;
        tg_dec want;
    } cases[] = {
        {"0", 0},
        {"-1.5", -(tg_dec)1500000000000LL},
        {"0.000000000001", 1},
        {"12.5", (tg_dec)12500000000000LL},
        {"1", TG_DEC_ONE},
        {"-0.000000000001", -1},
        {"1.000000000000", TG_DEC_ONE},
        {"0.1", (tg_dec)100000000000LL},
        {"123456789.123456789012", (tg_dec)123456789 * TG_DEC_ONE + 123456789012LL},
        {digits26, pow10_units(38) - pow10_units(12)}, /* (10^26 - 1) * 10^12 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_dec got = 42;
        int rc = tg_dec_parse(cases[i].in, strlen(cases[i].in), &got);
        if (rc != 0)
            fail_msg("tg_dec_parse(\"%s\") refused a valid decimal", cases[i].in);
        assert_dec_equal(got, cases[i].want);
    }
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static char digits27[28], frac13[20];
    memset(digits27, '1', 27);
    digits27[27] = '\0';
    snprintf(frac13, sizeof frac13, "1.%s", "0000000000001"); /* 13 fraction digits */
    const char *cases[] = {
        "", "-", ".5", "1.", "1e5", "0x10", " 1", "1 ", "+1", frac13, digits27, "abc", "1,5",
        "NaN", "inf", "-inf", "--1", "1..2", "1.2.3", "-.5", "1-", "Infinity", "1E5", "\t1",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_dec got = 77;
        int rc = tg_dec_parse(cases[i], strlen(cases[i]), &got);
        if (rc != -1)
            fail_msg("tg_dec_parse(\"%s\") accepted an invalid decimal (rc %d)", cases[i], rc);
    }
}

/* The parser must read exactly len bytes: neither past them nor stop early. */
static void test_parse_respects_len(void **state)
{
    (void)state;
    tg_dec got = 0;
    assert_int_equal(tg_dec_parse("12.5xyz", 4, &got), 0);
    assert_dec_equal(got, (tg_dec)12500000000000LL);
    assert_int_equal(tg_dec_parse("7", 0, &got), -1); /* empty */
    char embedded[] = {'1', '\0', '2'};
    assert_int_equal(tg_dec_parse(embedded, sizeof embedded, &got), -1);
}

static void test_format_shortest(void **state)
{
    (void)state;
    const struct {
        tg_dec in;
        const char *want;
    } cases[] = {
        {0, "0"},
        {(tg_dec)300000000000LL, "0.3"},
        {-(tg_dec)12 * TG_DEC_ONE, "-12"},
        {(tg_dec)5000001000000LL, "5.000001"},
        {1, "0.000000000001"},
        {-1, "-0.000000000001"},
        {(tg_dec)10 * TG_DEC_ONE, "10"},
        {(tg_dec)100500000000000LL, "100.5"},
        {-(tg_dec)1500000000000LL, "-1.5"},
        {DEC_MAX, "170141183460469231731687303.715884105727"},
        {DEC_MIN, "-170141183460469231731687303.715884105728"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[TG_DEC_STR_MAX];
        memset(buf, 'X', sizeof buf);
        size_t n = tg_dec_format(cases[i].in, buf);
        assert_string_equal(buf, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
}

static void test_format_round_trip(void **state)
{
    (void)state;
    const char *texts[] = {
        "0", "0.3", "-12", "5.000001", "0.000000000001", "-0.000000000001", "12.5",
        "99999999999999999999999999.999999999999", "-99999999999999999999999999.999999999999",
        "123456789012345678901234.5", "1000000", "-0.1",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        tg_dec d = 0, back = 0;
        assert_int_equal(tg_dec_parse(texts[i], strlen(texts[i]), &d), 0);
        char buf[TG_DEC_STR_MAX];
        tg_dec_format(d, buf);
        assert_string_equal(buf, texts[i]);
        assert_int_equal(tg_dec_parse(buf, strlen(buf), &back), 0);
        assert_true(back == d);
    }
}

static void test_point_one_plus_point_two(void **state)
{
    (void)state;
    tg_dec a, b, sum;
    assert_int_equal(tg_dec_parse("0.1", 3, &a), 0);
    assert_int_equal(tg_dec_parse("0.2", 3, &b), 0);
    assert_int_equal(tg_dec_add(a, b, &sum), 0);
    char buf[TG_DEC_STR_MAX];
    tg_dec_format(sum, buf);
    assert_string_equal(buf, "0.3");
    tg_dec three;
    assert_int_equal(tg_dec_parse("0.3", 3, &three), 0);
    assert_true(sum == three);
}

static void test_add_sub_overflow(void **state)
{
    (void)state;
    const struct {
        char op; /* '+' or '-' */
        tg_dec a, b;
        int rc;
        tg_dec want; /* when rc == 0 */
    } cases[] = {
        {'+', DEC_MAX, 1, -1, 0},
        {'+', DEC_MAX, 0, 0, DEC_MAX},
        {'+', DEC_MAX, -1, 0, DEC_MAX - 1},
        {'+', DEC_MIN, -1, -1, 0},
        {'+', DEC_MIN, DEC_MAX, 0, -1},
        {'+', DEC_MAX, DEC_MAX, -1, 0},
        {'+', DEC_MIN, DEC_MIN, -1, 0},
        {'+', DEC_MAX - 5, 5, 0, DEC_MAX},
        {'-', DEC_MIN, 1, -1, 0},
        {'-', DEC_MIN, -1, 0, DEC_MIN + 1},
        {'-', DEC_MAX, -1, -1, 0},
        {'-', 0, DEC_MIN, -1, 0},
        {'-', -1, DEC_MIN, 0, DEC_MAX},
        {'-', 0, DEC_MAX, 0, DEC_MIN + 1},
        {'-', DEC_MAX, DEC_MAX, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tg_dec sentinel = 123456789;
        tg_dec out = sentinel;
        int rc = cases[i].op == '+' ? tg_dec_add(cases[i].a, cases[i].b, &out)
                                    : tg_dec_sub(cases[i].a, cases[i].b, &out);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%c): rc %d, want %d", i, cases[i].op, rc, cases[i].rc);
        if (rc)
            assert_true(out == sentinel); /* out untouched on overflow */
        else
            assert_dec_equal(out, cases[i].want);
    }
}

static void test_from_int(void **state)
{
    (void)state;
    char buf[TG_DEC_STR_MAX];
    tg_dec_format(tg_dec_from_int(0), buf);
    assert_string_equal(buf, "0");
    tg_dec_format(tg_dec_from_int(-7), buf);
    assert_string_equal(buf, "-7");
    tg_dec_format(tg_dec_from_int(INT64_MAX), buf);
    assert_string_equal(buf, "9223372036854775807");
    tg_dec_format(tg_dec_from_int(INT64_MIN), buf);
    assert_string_equal(buf, "-9223372036854775808");
}

static void test_bytes_round_trip(void **state)
{
    (void)state;
    unsigned char b[16];

    tg_dec_to_bytes(1, b);
    assert_int_equal(b[0], 1);
    for (int i = 1; i < 16; i++)
        assert_int_equal(b[i], 0);

    tg_dec_to_bytes(-1, b);
    for (int i = 0; i < 16; i++)
        assert_int_equal(b[i], 0xff);

    tg_dec_to_bytes((tg_dec)0x0102, b); /* little-endian */
    assert_int_equal(b[0], 0x02);
    assert_int_equal(b[1], 0x01);

    tg_dec_to_bytes(DEC_MIN, b);
    assert_int_equal(b[15], 0x80);
    for (int i = 0; i < 15; i++)
        assert_int_equal(b[i], 0);

    const tg_dec values[] = {
        0, 1, -1, TG_DEC_ONE, -TG_DEC_ONE, (tg_dec)300000000000LL, -(tg_dec)1500000000000LL,
        DEC_MAX, DEC_MIN, DEC_MIN + 1, pow10_units(38) - 1, -pow10_units(37),
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        tg_dec_to_bytes(values[i], b);
        assert_dec_equal(tg_dec_from_bytes(b), values[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_respects_len),
        cmocka_unit_test(test_format_shortest),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_point_one_plus_point_two),
        cmocka_unit_test(test_add_sub_overflow),
        cmocka_unit_test(test_from_int),
        cmocka_unit_test(test_bytes_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
