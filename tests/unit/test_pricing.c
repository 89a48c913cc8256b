/* test_pricing.c -- unit tests for core/pricing.h.
 *
 * Pins Stripe's documented tier example in both modes (quantity 0 charges the first tier's
 * flat amount, a volume total on a bound stays in that tier, a graduated quantity pays each
 * entered tier's flat amount), fractional quantities at tier bounds, per-unit decimal
 * amounts, transform_quantity, the tier rules and overflow reporting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/money.h"
#include "core/pricing.h"

static tg_dec dec(const char *s)
{
    tg_dec d = 0;
    if (tg_dec_parse(s, strlen(s), &d) != 0)
        fail_msg("bad decimal literal \"%s\"", s);
    return d;
}

static tg_tier tier(int64_t up_to, const char *unit, const char *flat)
{
    tg_tier t = {.up_to_inf = up_to == 0, .up_to = up_to};
    if (unit) {
        t.has_unit = true;
        t.unit_amount = dec(unit);
    }
    if (flat) {
        t.has_flat = true;
        t.flat_amount = dec(flat);
    }
    return t;
}

/* Stripe's example, in cents: 1-5 $5 + $10, 6-10 $4 + $20, 11-15 $3 + $30, 16-20 $2 + $40,
 * 21+ $1 + $50. (up_to 0 here means inf.) */
static tg_tier stripe_tiers[5];

static int setup_tiers(void **state)
{
    (void)state;
    stripe_tiers[0] = tier(5, "500", "1000");
    stripe_tiers[1] = tier(10, "400", "2000");
    stripe_tiers[2] = tier(15, "300", "3000");
    stripe_tiers[3] = tier(20, "200", "4000");
    stripe_tiers[4] = tier(0, "100", "5000");
    return 0;
}

static tg_pricing tiered(tg_tiers_mode mode, const tg_tier *tiers, size_t n)
{
    tg_pricing p = {.scheme = TG_SCHEME_TIERED, .tiers_mode = mode, .tiers = tiers, .ntiers = n};
    return p;
}

static tg_pricing per_unit(const char *amount)
{
    tg_pricing p = {.scheme = TG_SCHEME_PER_UNIT, .unit_amount = dec(amount)};
    return p;
}

static void assert_amount(const tg_pricing *p, const char *q, int64_t want)
{
    int64_t got = -12345;
    if (tg_pricing_amount(p, dec(q), &got) != 0)
        fail_msg("amount(%s) failed, want %lld", q, (long long)want);
    if (got != want)
        fail_msg("amount(%s) = %lld, want %lld", q, (long long)got, (long long)want);
}

static void test_stripe_example_volume(void **state)
{
    (void)state;
    tg_pricing p = tiered(TG_TIERS_VOLUME, stripe_tiers, 5);
    assert_amount(&p, "12", 12 * 300 + 3000); /* 6600 */
    assert_amount(&p, "0", 1000);
    assert_amount(&p, "5", 5 * 500 + 1000);
    assert_amount(&p, "6", 6 * 400 + 2000);
    assert_amount(&p, "10", 10 * 400 + 2000);
    assert_amount(&p, "21", 21 * 100 + 5000);
    assert_amount(&p, "100", 100 * 100 + 5000);
}

static void test_stripe_example_graduated(void **state)
{
    (void)state;
    tg_pricing p = tiered(TG_TIERS_GRADUATED, stripe_tiers, 5);
    assert_amount(&p, "12", (5 * 500 + 1000) + (5 * 400 + 2000) + (2 * 300 + 3000)); /* 11100 */
    assert_amount(&p, "0", 1000);
    assert_amount(&p, "1", 500 + 1000);
    assert_amount(&p, "5", 3500);
    assert_amount(&p, "6", 3500 + 400 + 2000);
    assert_amount(&p, "21", 3500 + 4000 + 4500 + 5000 + (100 + 5000)); /* 22100 */
    assert_amount(&p, "100", 3500 + 4000 + 4500 + 5000 + (80 * 100 + 5000)); /* 30000 */
}

/* A fractional quantity past a bound belongs to the next tier (volume) or puts its fraction
 * in the next tier, which then charges its flat amount (graduated). */
static void test_fractional_quantities(void **state)
{
    (void)state;
    tg_pricing v = tiered(TG_TIERS_VOLUME, stripe_tiers, 5);
    assert_amount(&v, "10.5", 3150 + 3000);
    assert_amount(&v, "0.5", 250 + 1000);
    assert_amount(&v, "5.000000000001", 4000); /* 5.000000000001 * 400 + 2000 */
    tg_pricing g = tiered(TG_TIERS_GRADUATED, stripe_tiers, 5);
    assert_amount(&g, "10.5", 3500 + 4000 + 150 + 3000);
    assert_amount(&g, "5.5", 3500 + 200 + 2000);
    assert_amount(&g, "0.5", 250 + 1000);
    assert_amount(&g, "20.25", 3500 + 4000 + 4500 + 5000 + 25 + 5000);
}

/* Tiers with only a unit or only a flat amount; decimal unit amounts round once per line. */
static void test_partial_tiers(void **state)
{
    (void)state;
    /* First 1000 tokens free, then 0.2 cents each. */
    const tg_tier free_first[] = {tier(1000, "0", NULL), tier(0, "0.2", NULL)};
    tg_pricing g = tiered(TG_TIERS_GRADUATED, free_first, 2);
    assert_amount(&g, "1000", 0);
    assert_amount(&g, "3000", 400);
    assert_amount(&g, "1002", 0); /* 0.4 */
    assert_amount(&g, "1003", 1); /* 0.6 */
    assert_amount(&g, "0", 0);    /* no flat amount on the first tier */

    /* A flat fee for up to 10 units, then per unit. */
    const tg_tier flat_then_unit[] = {tier(10, NULL, "2500"), tier(0, "199", NULL)};
    tg_pricing v = tiered(TG_TIERS_VOLUME, flat_then_unit, 2);
    assert_amount(&v, "0", 2500);
    assert_amount(&v, "10", 2500);
    assert_amount(&v, "11", 11 * 199);
    g = tiered(TG_TIERS_GRADUATED, flat_then_unit, 2);
    assert_amount(&g, "0", 2500);
    assert_amount(&g, "3", 2500);
    assert_amount(&g, "11", 2500 + 199);

    /* The has_ flags decide: an amount whose flag is unset is ignored. */
    tg_tier unit_only = tier(0, "3", NULL), flat_only = tier(0, NULL, "40");
    unit_only.flat_amount = dec("1000");
    flat_only.unit_amount = dec("1000");
    g = tiered(TG_TIERS_GRADUATED, &unit_only, 1);
    assert_amount(&g, "2", 6);
    g.tiers = &flat_only;
    assert_amount(&g, "2", 40);
    v = tiered(TG_TIERS_VOLUME, &unit_only, 1);
    assert_amount(&v, "2", 6);
    v.tiers = &flat_only;
    assert_amount(&v, "2", 40);

    /* Only the inf tier. */
    const tg_tier single[] = {tier(0, "0.001", "7")};
    tg_pricing s = tiered(TG_TIERS_VOLUME, single, 1);
    assert_amount(&s, "1500", 9); /* 1.5 + 7 = 8.5 */
    s.tiers_mode = TG_TIERS_GRADUATED;
    assert_amount(&s, "1500", 9);
}

/* unit_amount_decimal 0.2 cents per token. */
static void test_per_unit_tokens(void **state)
{
    (void)state;
    tg_pricing p = per_unit("0.2");
    assert_amount(&p, "3456789", 691358); /* 691,357.8 */
    assert_amount(&p, "2500001", 500000); /* 500,000.2 */
    assert_amount(&p, "0", 0);
    assert_amount(&p, "2.5", 1); /* 0.5 */
    assert_amount(&p, "-10", 0); /* negative usage bills as 0 */
    tg_pricing whole = per_unit("1500");
    assert_amount(&whole, "3", 4500);
    assert_amount(&whole, "0.333333333333", 500); /* 499.9999999995 */
}

static void test_transform_quantity(void **state)
{
    (void)state;
    tg_pricing p = per_unit("1000");
    p.divide_by = 60;
    p.round_up = true;
    tg_dec q = 0;
    assert_int_equal(tg_pricing_quantity(&p, dec("150"), &q), 0);
    assert_true(q == dec("3"));
    assert_amount(&p, "150", 3000);
    assert_amount(&p, "0", 0);
    assert_amount(&p, "0.000000000001", 1000);
    assert_amount(&p, "-150", 0);

    p.round_up = false;
    assert_int_equal(tg_pricing_quantity(&p, dec("150"), &q), 0);
    assert_true(q == dec("2"));
    assert_amount(&p, "150", 2000);
    assert_amount(&p, "59.999999999999", 0);

    p.divide_by = 0; /* none: the quantity itself, negatives as 0 */
    assert_int_equal(tg_pricing_quantity(&p, dec("150.5"), &q), 0);
    assert_true(q == dec("150.5"));
    assert_int_equal(tg_pricing_quantity(&p, dec("-0.1"), &q), 0);
    assert_true(q == 0);
}

/* charge adds unrounded: parts of a line and its proration are rounded once, together. */
static void test_charge_then_prorate(void **state)
{
    (void)state;
    tg_pricing t = per_unit("0.2");
    tg_money_acc acc = tg_money_acc_zero();
    assert_int_equal(tg_pricing_charge(&t, dec("2.5"), &acc), 0); /* 0.5 */
    assert_int_equal(tg_pricing_charge(&t, dec("2.5"), &acc), 0); /* + 0.5 */
    int64_t got = 0;
    assert_int_equal(tg_money_acc_round(&acc, 1, &got), 0);
    assert_int_equal(got, 1); /* rounding each part would give 2 */

    /* 12 units graduated (11100) for 15 of 31 days: 5370.967... */
    tg_pricing p = tiered(TG_TIERS_GRADUATED, stripe_tiers, 5);
    acc = tg_money_acc_zero();
    assert_int_equal(tg_pricing_charge(&p, dec("12"), &acc), 0);
    assert_int_equal(tg_money_acc_mul_int(&acc, 15), 0);
    assert_int_equal(tg_money_acc_round(&acc, 31, &got), 0);
    assert_int_equal(got, 5371);
}

static void test_overflow(void **state)
{
    (void)state;
    int64_t got = 0;
    /* Amounts beyond int64 minor units. */
    tg_pricing p = per_unit("99999999999999999999999999");
    assert_int_equal(tg_pricing_amount(&p, dec("99999999999999999999999999"), &got), -1);
    assert_int_equal(tg_pricing_amount(&p, dec("1"), &got), -1);
    p = per_unit("9223372036854775807");
    assert_int_equal(tg_pricing_amount(&p, dec("1"), &got), 0);
    assert_true(got == INT64_MAX);
    assert_int_equal(tg_pricing_amount(&p, dec("1.000000000001"), &got), -1);

    /* transform_quantity rounding the largest quantity up leaves the decimal range. */
    tg_dec huge = (tg_dec)(((unsigned __int128)1 << 127) - 1);
    tg_pricing t = per_unit("1");
    t.divide_by = 1;
    t.round_up = true;
    tg_dec q = 0;
    assert_int_equal(tg_pricing_quantity(&t, huge, &q), -1);
    assert_int_equal(tg_pricing_amount(&t, huge, &got), -1);

    /* Unchecked tiers without a final inf tier are refused rather than read past. */
    const tg_tier open_ended[] = {tier(5, "1", NULL)};
    tg_pricing bad = tiered(TG_TIERS_VOLUME, open_ended, 1);
    assert_int_equal(tg_pricing_amount(&bad, dec("3"), &got), -1);
    bad.tiers_mode = TG_TIERS_GRADUATED;
    assert_int_equal(tg_pricing_amount(&bad, dec("3"), &got), -1);
}

static void assert_tiers_bad(const tg_tier *tiers, size_t n, int want_bad)
{
    int bad = 1234;
    char msg[128] = "";
    assert_int_equal(tg_pricing_check_tiers(tiers, n, &bad, msg, sizeof msg), -1);
    assert_int_equal(bad, want_bad);
    assert_true(strlen(msg) > 0);
}

static void test_check_tiers(void **state)
{
    (void)state;
    int bad = 1234;
    char msg[128] = "";
    assert_int_equal(tg_pricing_check_tiers(stripe_tiers, 5, &bad, msg, sizeof msg), 0);
    const tg_tier one[] = {tier(0, NULL, "0")};
    assert_int_equal(tg_pricing_check_tiers(one, 1, &bad, msg, sizeof msg), 0);

    assert_tiers_bad(stripe_tiers, 0, -1);
    static tg_tier many[TG_TIERS_MAX + 1];
    for (int i = 0; i < TG_TIERS_MAX; i++)
        many[i] = tier(i + 1, "1", NULL);
    many[TG_TIERS_MAX - 1] = tier(0, "1", NULL);
    assert_int_equal(tg_pricing_check_tiers(many, TG_TIERS_MAX, &bad, msg, sizeof msg), 0);
    many[TG_TIERS_MAX - 1] = tier(TG_TIERS_MAX, "1", NULL);
    many[TG_TIERS_MAX] = tier(0, "1", NULL);
    assert_tiers_bad(many, TG_TIERS_MAX + 1, -1);

    const tg_tier no_amount[] = {tier(5, "1", NULL), tier(0, NULL, NULL)};
    assert_tiers_bad(no_amount, 2, 1);
    const tg_tier negative_unit[] = {tier(5, "-1", NULL), tier(0, "1", NULL)};
    assert_tiers_bad(negative_unit, 2, 0);
    const tg_tier negative_flat[] = {tier(5, "1", NULL), tier(0, "1", "-0.5")};
    assert_tiers_bad(negative_flat, 2, 1);
    const tg_tier not_increasing[] = {tier(5, "1", NULL), tier(5, "1", NULL), tier(0, "1", NULL)};
    assert_tiers_bad(not_increasing, 3, 1);
    const tg_tier decreasing[] = {tier(5, "1", NULL), tier(10, "1", NULL), tier(7, "1", NULL),
                                  tier(0, "1", NULL)};
    assert_tiers_bad(decreasing, 4, 2);
    const tg_tier inf_early[] = {tier(0, "1", NULL), tier(0, "1", NULL)};
    assert_tiers_bad(inf_early, 2, 0);
    const tg_tier no_inf[] = {tier(5, "1", NULL), tier(10, "1", NULL)};
    assert_tiers_bad(no_inf, 2, 1);
    const tg_tier negative_bound[] = {tier(-3, "1", NULL), tier(0, "1", NULL)};
    assert_tiers_bad(negative_bound, 2, 0);
    tg_tier zero_bound[] = {tier(5, "1", NULL), tier(0, "1", NULL)};
    zero_bound[0].up_to = 0; /* finite, but not >= 1 */
    assert_tiers_bad(zero_bound, 2, 0);

    /* A short message buffer is truncated, not overrun. */
    char tiny[8];
    memset(tiny, 'X', sizeof tiny);
    assert_int_equal(tg_pricing_check_tiers(no_inf, 2, &bad, tiny, sizeof tiny), -1);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_stripe_example_volume, setup_tiers),
        cmocka_unit_test_setup(test_stripe_example_graduated, setup_tiers),
        cmocka_unit_test_setup(test_fractional_quantities, setup_tiers),
        cmocka_unit_test(test_partial_tiers),
        cmocka_unit_test(test_per_unit_tokens),
        cmocka_unit_test(test_transform_quantity),
        cmocka_unit_test_setup(test_charge_then_prorate, setup_tiers),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test_setup(test_check_tiers, setup_tiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
