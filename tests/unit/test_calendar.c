/* test_calendar.c -- unit tests for core/calendar.h.
 *
 * Civil conversions are checked against fixed Unix times and a day-by-day walk over five
 * centuries (1900 and 2100 are not leap years, 2000 is). Boundaries pin Stripe's month-end
 * rule (Jan 31 -> Feb 28 -> Mar 31), leap days for monthly and yearly anchors, day_of_month
 * configs, weeks, days and multi-unit intervals; period_containing is checked at, just before
 * and just after every boundary (before the anchor too), and decades of daily periods away.
 * The v2 timestamp parser is checked on fixed texts both sides of each rule and against the
 * civil conversion over four centuries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/calendar.h"

static int64_t at(int64_t y, int mo, int d, int h, int mi, int s)
{
    tg_civil c = {.year = y, .month = mo, .day = d, .hour = h, .minute = mi, .second = s};
    return tg_unix_from_civil(&c);
}

static void format_time(int64_t t, char *buf, size_t cap)
{
    tg_civil c = tg_civil_from_unix(t);
    snprintf(buf, cap, "%04lld-%02d-%02d %02d:%02d:%02d", (long long)c.year, c.month, c.day,
             c.hour, c.minute, c.second);
}

/* Compares a time with "YYYY-MM-DD hh:mm:ss", so failures print the date. */
#define assert_time(t, want)                                                                  \
    do {                                                                                      \
        char buf_[40];                                                                        \
        format_time((t), buf_, sizeof buf_);                                                  \
        assert_string_equal(buf_, (want));                                                    \
    } while (0)

static void test_civil_known_times(void **state)
{
    (void)state;
    const struct {
        int64_t t;
        int64_t y;
        int mo, d, h, mi, s;
    } cases[] = {
        {0, 1970, 1, 1, 0, 0, 0},
        {-1, 1969, 12, 31, 23, 59, 59},
        {951825600, 2000, 2, 29, 12, 0, 0},
        {1769853600, 2026, 1, 31, 10, 0, 0},
        {4107542399, 2100, 2, 28, 23, 59, 59},
        {4107542400, 2100, 3, 1, 0, 0, 0},
        {-2208988800, 1900, 1, 1, 0, 0, 0},
        {-11670998400, 1600, 2, 29, 0, 0, 0},
        {-62135596800, 1, 1, 1, 0, 0, 0},
        {-62162035200, 0, 3, 1, 0, 0, 0},
        {-62162035201, 0, 2, 29, 23, 59, 59},
        {253402300799, 9999, 12, 31, 23, 59, 59},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_civil c = tg_civil_from_unix(cases[i].t);
        if (c.year != cases[i].y || c.month != cases[i].mo || c.day != cases[i].d ||
            c.hour != cases[i].h || c.minute != cases[i].mi || c.second != cases[i].s)
            fail_msg("%lld: got %lld-%d-%d %d:%d:%d", (long long)cases[i].t, (long long)c.year,
                     c.month, c.day, c.hour, c.minute, c.second);
        assert_int_equal(tg_unix_from_civil(&c), cases[i].t);
    }
}

/* Walks every day from 1800-01-01 to 2400-12-31 with an independent calendar. */
static void test_civil_day_walk(void **state)
{
    (void)state;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t y = 1800;
    int m = 1, d = 1;
    int64_t day = -62091; /* days from 1970-01-01 to 1800-01-01 */
    int feb29 = 0;
    while (y <= 2400) {
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        int dim = m == 2 && leap ? 29 : mdays[m - 1];
        assert_int_equal(tg_days_in_month(y, m), dim);
        int64_t t = day * 86400 + (day % 86400 + 86400) % 86400; /* vary the time of day */
        tg_civil c = tg_civil_from_unix(t);
        if (c.year != y || c.month != m || c.day != d)
            fail_msg("day %lld: got %lld-%d-%d, want %lld-%d-%d", (long long)day,
                     (long long)c.year, c.month, c.day, (long long)y, m, d);
        assert_int_equal(c.hour * 3600 + c.minute * 60 + c.second, t - day * 86400);
        assert_int_equal(tg_unix_from_civil(&c), t);
        feb29 += m == 2 && d == 29;
        day++;
        if (++d > dim) {
            d = 1;
            if (++m > 12) {
                m = 1;
                y++;
            }
        }
    }
    assert_int_equal(feb29, 146); /* 601 years: 151 multiples of 4 minus 1800,1900,2100,2200,2300 */
}

/* Round trips far from the epoch, including negative years. */
static void test_civil_round_trip_wide(void **state)
{
    (void)state;
    for (int64_t t = -100000000000LL; t <= 100000000000LL; t += 7777777) {
        tg_civil c = tg_civil_from_unix(t);
        assert_true(c.month >= 1 && c.month <= 12);
        assert_true(c.day >= 1 && c.day <= tg_days_in_month(c.year, c.month));
        assert_true(c.hour >= 0 && c.hour < 24 && c.minute >= 0 && c.minute < 60);
        assert_true(c.second >= 0 && c.second < 60);
        assert_int_equal(tg_unix_from_civil(&c), t);
    }
    assert_time(at(-1, 12, 31, 23, 59, 59) + 1, "0000-01-01 00:00:00");
    tg_civil c = tg_civil_from_unix(at(-400, 2, 29, 0, 0, 0));
    assert_int_equal(c.year, -400);
    assert_int_equal(c.month, 2);
    assert_int_equal(c.day, 29);
    /* Month arithmetic across year 0. */
    c = tg_civil_from_unix(tg_period_boundary(at(0, 1, 31, 0, 0, 0), TG_INTERVAL_MONTH, 1, 0, -1));
    assert_int_equal(c.year, -1);
    assert_int_equal(c.month, 12);
    assert_int_equal(c.day, 31);
    c = tg_civil_from_unix(tg_period_boundary(at(-1, 11, 30, 0, 0, 0), TG_INTERVAL_MONTH, 3, 0, 1));
    assert_int_equal(c.year, 0);
    assert_int_equal(c.month, 2);
    assert_int_equal(c.day, 29);
}

static void test_days_in_month(void **state)
{
    (void)state;
    assert_int_equal(tg_days_in_month(2026, 2), 28);
    assert_int_equal(tg_days_in_month(2028, 2), 29);
    assert_int_equal(tg_days_in_month(2100, 2), 28);
    assert_int_equal(tg_days_in_month(2000, 2), 29);
    assert_int_equal(tg_days_in_month(2026, 4), 30);
    assert_int_equal(tg_days_in_month(2026, 12), 31);
    assert_int_equal(tg_days_in_month(2026, 1), 31);
    assert_int_equal(tg_days_in_month(-4, 2), 29);
}

/* Stripe's month-end rule: each boundary comes from the anchor, not the previous one. */
static void test_month_end_anchor(void **state)
{
    (void)state;
    int64_t a = at(2026, 1, 31, 10, 0, 0);
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 0), "2026-01-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 1), "2026-02-28 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 2), "2026-03-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 3), "2026-04-30 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 4), "2026-05-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 11), "2026-12-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 12), "2027-01-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 25), "2028-02-29 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 1201), "2126-02-28 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, -1), "2025-12-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, -2), "2025-11-30 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, -11), "2025-02-28 10:00:00");

    int64_t leap = at(2028, 1, 31, 23, 59, 59);
    assert_time(tg_period_boundary(leap, TG_INTERVAL_MONTH, 1, 0, 1), "2028-02-29 23:59:59");
    assert_time(tg_period_boundary(leap, TG_INTERVAL_MONTH, 1, 0, 2), "2028-03-31 23:59:59");

    /* An anchor on the 30th stays on the 30th after February. */
    int64_t a30 = at(2026, 1, 30, 0, 0, 0);
    assert_time(tg_period_boundary(a30, TG_INTERVAL_MONTH, 1, 0, 1), "2026-02-28 00:00:00");
    assert_time(tg_period_boundary(a30, TG_INTERVAL_MONTH, 1, 0, 2), "2026-03-30 00:00:00");
}

static void test_yearly_leap_day(void **state)
{
    (void)state;
    int64_t a = at(2028, 2, 29, 8, 30, 0);
    assert_time(tg_period_boundary(a, TG_INTERVAL_YEAR, 1, 0, 1), "2029-02-28 08:30:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_YEAR, 1, 0, 2), "2030-02-28 08:30:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_YEAR, 1, 0, 4), "2032-02-29 08:30:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_YEAR, 1, 0, 72), "2100-02-28 08:30:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_YEAR, 2, 0, 2), "2032-02-29 08:30:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 12, 0, 1), "2029-02-28 08:30:00");
}

/* billing_cycle_anchor_config day_of_month 31 with an anchor that landed on Feb 28. */
static void test_day_of_month_config(void **state)
{
    (void)state;
    int64_t a = at(2026, 2, 28, 0, 0, 0);
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 31, 0), "2026-02-28 00:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 31, 1), "2026-03-31 00:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 31, 2), "2026-04-30 00:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 31, 12), "2027-02-28 00:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 31, 24), "2028-02-29 00:00:00");
    /* Without the config the cycle stays on the 28th. */
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 0, 1), "2026-03-28 00:00:00");
    /* day_of_month 30 from Feb 28. */
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 1, 30, 1), "2026-03-30 00:00:00");
    /* k = 0 is the anchor itself even when it is not on day_of_month. */
    int64_t mid = at(2026, 1, 15, 6, 0, 0);
    assert_time(tg_period_boundary(mid, TG_INTERVAL_MONTH, 1, 31, 0), "2026-01-15 06:00:00");
    assert_time(tg_period_boundary(mid, TG_INTERVAL_MONTH, 1, 31, 1), "2026-02-28 06:00:00");
    int64_t s = 0, e = 0;
    tg_period_containing(mid, TG_INTERVAL_MONTH, 1, 31, at(2026, 1, 31, 7, 0, 0), &s, &e);
    assert_time(s, "2026-01-15 06:00:00");
    assert_time(e, "2026-02-28 06:00:00");
}

static void test_weeks_and_days(void **state)
{
    (void)state;
    int64_t a = at(2026, 12, 29, 18, 0, 0);
    assert_time(tg_period_boundary(a, TG_INTERVAL_WEEK, 1, 0, 1), "2027-01-05 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_WEEK, 2, 0, 1), "2027-01-12 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_WEEK, 1, 0, 9), "2027-03-02 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_DAY, 1, 0, 1), "2026-12-30 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_DAY, 1, 0, 3), "2027-01-01 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_DAY, 3, 0, 2), "2027-01-04 18:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_DAY, 1, 0, 365), "2027-12-29 18:00:00");
    int64_t leap = at(2028, 2, 28, 0, 0, 0);
    assert_time(tg_period_boundary(leap, TG_INTERVAL_DAY, 1, 0, 1), "2028-02-29 00:00:00");
}

static void test_interval_count_three_months(void **state)
{
    (void)state;
    int64_t a = at(2026, 1, 31, 10, 0, 0);
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 3, 0, 1), "2026-04-30 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 3, 0, 2), "2026-07-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 3, 0, 3), "2026-10-31 10:00:00");
    assert_time(tg_period_boundary(a, TG_INTERVAL_MONTH, 3, 0, 4), "2027-01-31 10:00:00");
    int64_t nov = at(2027, 11, 30, 0, 0, 0);
    assert_time(tg_period_boundary(nov, TG_INTERVAL_MONTH, 3, 0, 1), "2028-02-29 00:00:00");
    assert_time(tg_period_boundary(nov, TG_INTERVAL_MONTH, 3, 0, 2), "2028-05-30 00:00:00");
}

/* Checks containing() at, just after and just before boundaries -12..n, and mid-period. */
static void check_containing(int64_t a, tg_interval unit, int count, int dom, int64_t n)
{
    for (int64_t k = -12; k < n; k++) {
        int64_t b0 = tg_period_boundary(a, unit, count, dom, k);
        int64_t b1 = tg_period_boundary(a, unit, count, dom, k + 1);
        assert_true(b1 > b0);
        const int64_t probes[] = {b0, b0 + 1, b0 + (b1 - b0) / 2, b1 - 1};
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
            int64_t s = 0, e = 0;
            tg_period_containing(a, unit, count, dom, probes[i], &s, &e);
            if (s != b0 || e != b1) {
                char want[40], got[40];
                format_time(b0, want, sizeof want);
                format_time(s, got, sizeof got);
                fail_msg("unit %d count %d k %lld probe %zu: start %s, want %s", (int)unit,
                         count, (long long)k, i, got, want);
            }
        }
    }
}

static void test_period_containing(void **state)
{
    (void)state;
    int64_t a = at(2026, 1, 31, 10, 0, 0);
    check_containing(a, TG_INTERVAL_MONTH, 1, 0, 130);
    check_containing(a, TG_INTERVAL_MONTH, 3, 0, 50);
    check_containing(a, TG_INTERVAL_YEAR, 1, 0, 30);
    check_containing(a, TG_INTERVAL_WEEK, 1, 0, 120);
    check_containing(a, TG_INTERVAL_WEEK, 2, 0, 60);
    check_containing(a, TG_INTERVAL_DAY, 1, 0, 800);
    check_containing(a, TG_INTERVAL_DAY, 5, 0, 200);
    check_containing(at(2028, 2, 29, 0, 0, 0), TG_INTERVAL_YEAR, 1, 0, 20);
    check_containing(at(2026, 2, 28, 23, 0, 0), TG_INTERVAL_MONTH, 1, 31, 40);
    check_containing(at(1969, 12, 31, 12, 0, 0), TG_INTERVAL_MONTH, 1, 0, 24); /* negative times */

    /* The exact boundary belongs to the period that starts there. */
    int64_t s = 0, e = 0;
    int64_t feb = at(2026, 2, 28, 10, 0, 0);
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, feb, &s, &e);
    assert_time(s, "2026-02-28 10:00:00");
    assert_time(e, "2026-03-31 10:00:00");
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, feb - 1, &s, &e);
    assert_time(s, "2026-01-31 10:00:00");
    assert_time(e, "2026-02-28 10:00:00");
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, a, &s, &e);
    assert_true(s == a);
    assert_time(e, "2026-02-28 10:00:00");
    /* Later in a month than the anchor's day: Mar 31 10:00 is past, Mar 31 09:59 is not. */
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, at(2026, 3, 31, 9, 59, 59), &s, &e);
    assert_time(s, "2026-02-28 10:00:00");

    /* Before the anchor, periods count back from it: the next boundary is the anchor. */
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, a - 1, &s, &e);
    assert_time(s, "2025-12-31 10:00:00");
    assert_true(e == a);
    tg_period_containing(a, TG_INTERVAL_DAY, 1, 0, a - 1, &s, &e);
    assert_true(s == a - 86400 && e == a);
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, at(2025, 11, 30, 10, 0, 0), &s, &e);
    assert_time(s, "2025-11-30 10:00:00");
    assert_time(e, "2025-12-31 10:00:00");

    /* Decades of daily periods and centuries of months, found without walking from k = 0. */
    tg_period_containing(a, TG_INTERVAL_DAY, 1, 0, at(2066, 7, 4, 9, 59, 59), &s, &e);
    assert_time(s, "2066-07-03 10:00:00");
    assert_time(e, "2066-07-04 10:00:00");
    tg_period_containing(a, TG_INTERVAL_WEEK, 1, 0, at(2126, 1, 1, 0, 0, 0), &s, &e);
    assert_int_equal((s - a) % (7 * 86400), 0);
    assert_true(s <= at(2126, 1, 1, 0, 0, 0) && e > at(2126, 1, 1, 0, 0, 0));
    tg_period_containing(a, TG_INTERVAL_MONTH, 1, 0, at(2226, 2, 28, 10, 0, 0), &s, &e);
    assert_time(s, "2226-02-28 10:00:00");
    assert_time(e, "2226-03-31 10:00:00");
}

static void test_anchor_from_config(void **state)
{
    (void)state;
    /* Month-end anchors, clamped to the month. */
    int64_t from = at(2026, 1, 15, 12, 0, 0);
    assert_time(tg_anchor_from_config(from, 31, 0, 0, 0, 0), "2026-01-31 00:00:00");
    assert_time(tg_anchor_from_config(from, 15, 0, 12, 0, 0), "2026-02-15 12:00:00");
    assert_time(tg_anchor_from_config(from, 15, 0, 12, 0, 1), "2026-01-15 12:00:01");
    assert_time(tg_anchor_from_config(from, 1, 0, 9, 30, 15), "2026-02-01 09:30:15");
    assert_time(tg_anchor_from_config(at(2026, 2, 10, 0, 0, 0), 31, 0, 0, 0, 0),
                "2026-02-28 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 1, 31, 0, 0, 0), 31, 0, 0, 0, 0),
                "2026-02-28 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 1, 31, 23, 0, 0), 31, 0, 12, 0, 0),
                "2026-02-28 12:00:00");
    assert_time(tg_anchor_from_config(at(2026, 12, 31, 23, 0, 0), 31, 0, 12, 0, 0),
                "2027-01-31 12:00:00");
    assert_time(tg_anchor_from_config(at(2028, 2, 1, 0, 0, 0), 30, 0, 0, 0, 0),
                "2028-02-29 00:00:00");

    /* A month restricts to yearly anchors in that month. */
    assert_time(tg_anchor_from_config(at(2026, 3, 1, 0, 0, 0), 15, 6, 0, 0, 0),
                "2026-06-15 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 7, 1, 0, 0, 0), 15, 6, 0, 0, 0),
                "2027-06-15 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 6, 15, 0, 0, 0), 15, 6, 0, 0, 0),
                "2027-06-15 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 3, 1, 0, 0, 0), 31, 2, 0, 0, 0),
                "2027-02-28 00:00:00");
    assert_time(tg_anchor_from_config(at(2027, 3, 1, 0, 0, 0), 29, 2, 0, 0, 0),
                "2028-02-29 00:00:00");
    assert_time(tg_anchor_from_config(at(2026, 12, 31, 0, 0, 0), 1, 1, 0, 0, 0),
                "2027-01-01 00:00:00");
}

static void test_interval_count_ok(void **state)
{
    (void)state;
    const struct {
        tg_interval unit;
        int64_t max;
    } limits[] = {
        {TG_INTERVAL_DAY, 1095},
        {TG_INTERVAL_WEEK, 156},
        {TG_INTERVAL_MONTH, 36},
        {TG_INTERVAL_YEAR, 3},
    };
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        assert_true(tg_interval_count_ok(limits[i].unit, 1));
        assert_true(tg_interval_count_ok(limits[i].unit, limits[i].max));
        assert_false(tg_interval_count_ok(limits[i].unit, limits[i].max + 1));
        assert_false(tg_interval_count_ok(limits[i].unit, 0));
        assert_false(tg_interval_count_ok(limits[i].unit, -1));
        assert_false(tg_interval_count_ok(limits[i].unit, INT64_MAX));
        assert_false(tg_interval_count_ok(limits[i].unit, INT64_MIN));
    }
}

static void test_iso_time(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t want;
    } ok[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"2024-06-01T12:00:00Z", 1717243200},
        {"2024-06-01t12:00:00z", 1717243200},
        {"2024-06-01T12:00:00.999Z", 1717243200}, /* the fraction is dropped */
        {"2024-06-01T14:30:00+02:30", 1717243200},
        {"2024-06-01T09:00:00-03:00", 1717243200},
        {"2024-02-29T00:00:00Z", 1709164800},
        {"2016-12-31T23:59:60Z", 1483228800}, /* a leap second reads as the next second */
        {"1969-12-31T23:59:59Z", -1},
        {"0000-03-01T00:00:00Z", -62162035200},
        {"9999-12-31T23:59:59Z", 253402300799},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t t = 0;
        if (!tg_parse_iso_time(ok[i].text, &t) || t != ok[i].want)
            fail_msg("%s: got %lld", ok[i].text, (long long)t);
    }
    static const char *const bad[] = {
        "", "2024-06-01", "2024-06-01T12:00:00", "2024-06-01 12:00:00Z", "2024-6-01T12:00:00Z",
        "2024-13-01T12:00:00Z", "2024-00-01T12:00:00Z", "2024-04-31T12:00:00Z",
        "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-06-01T24:00:00Z",
        "2024-06-01T12:60:00Z", "2024-06-01T12:00:61Z", "2024-06-01T12:00:00.Z",
        "2024-06-01T12:00:00+2:00", "2024-06-01T12:00:00+24:00", "2024-06-01T12:00:00Zx",
        "2024-06-01T12:00:00+02:00 ", "x2024-06-01T12:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t;
        if (tg_parse_iso_time(bad[i], &t))
            fail_msg("took %s", bad[i]);
    }
    /* every day of four centuries at a changing time of day, against the civil conversion */
    for (int64_t t = at(1900, 1, 1, 0, 0, 0); t < at(2300, 1, 1, 0, 0, 0); t += 86400 + 3607) {
        tg_civil c = tg_civil_from_unix(t);
        char text[40];
        snprintf(text, sizeof text, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)c.year, c.month,
                 c.day, c.hour, c.minute, c.second);
        int64_t back = 0;
        if (!tg_parse_iso_time(text, &back) || back != t)
            fail_msg("%s: got %lld, want %lld", text, (long long)back, (long long)t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_civil_known_times),
        cmocka_unit_test(test_iso_time),
        cmocka_unit_test(test_civil_day_walk),
        cmocka_unit_test(test_civil_round_trip_wide),
        cmocka_unit_test(test_days_in_month),
        cmocka_unit_test(test_month_end_anchor),
        cmocka_unit_test(test_yearly_leap_day),
        cmocka_unit_test(test_day_of_month_config),
        cmocka_unit_test(test_weeks_and_days),
        cmocka_unit_test(test_interval_count_three_months),
        cmocka_unit_test(test_period_containing),
        cmocka_unit_test(test_anchor_from_config),
        cmocka_unit_test(test_interval_count_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
