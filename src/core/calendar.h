/* calendar.h -- billing periods on the UTC calendar.
 *
 * A subscription's periods are the boundaries anchor + k intervals, k = 0, 1, 2, ..., each
 * computed from the anchor (never from the previous boundary), so Stripe's month-end rule
 * falls out: an anchor on Jan 31 gives Feb 28 (29 in leap years), then Mar 31, Apr 30. The
 * time of day of the anchor is kept. Years are 12 months (Feb 29 -> Feb 28), weeks 7 days.
 * Times are Unix seconds; nothing reads the system clock.
 */
#ifndef TG_CALENDAR_H
#define TG_CALENDAR_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { TG_INTERVAL_DAY, TG_INTERVAL_WEEK, TG_INTERVAL_MONTH, TG_INTERVAL_YEAR } tg_interval;

typedef struct tg_civil {
    int64_t year;
    int month, day; /* 1..12, 1..31 */
    int hour, minute, second;
} tg_civil;

/* Unix seconds <-> UTC civil time (proleptic Gregorian). */
tg_civil tg_civil_from_unix(int64_t t);
int64_t tg_unix_from_civil(const tg_civil *c);
int tg_days_in_month(int64_t year, int month);

/* Parses an ISO-8601 time "YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]" (v2 timestamps) to Unix
 * seconds; the fraction is dropped. By hand: this runs once per streamed event. */
bool tg_parse_iso_time(const char *s, int64_t *out);

/* The k-th boundary after anchor (k = 0 is the anchor; k < 0 counts back before it): anchor +
 * k * count units, with the day of month clamped to the target month's length. `day_of_month`
 * (1..31, or 0 to use the anchor's) is the day the cycle aims for, so an anchor config of 31
 * keeps month ends. count >= 1. */
int64_t tg_period_boundary(int64_t anchor, tg_interval unit, int count, int day_of_month,
                           int64_t k);

/* The first boundary strictly after t, and the one before it: the period [*start, *end) that
 * contains t. For t before the anchor, *end is the anchor or an earlier boundary (k < 0). */
void tg_period_containing(int64_t anchor, tg_interval unit, int count, int day_of_month,
                          int64_t t, int64_t *start, int64_t *end);

/* The first time > from on day_of_month (clamped to month length) at hour:minute:second UTC:
 * billing_cycle_anchor_config. month = 0 means any month; 1..12 restricts to that month
 * (yearly prices). */
int64_t tg_anchor_from_config(int64_t from, int day_of_month, int month, int hour, int minute,
                              int second);

/* Whether count units fit Stripe's limit (at most 3 years: 1095 days, 156 weeks, 36 months,
 * 3 years). */
bool tg_interval_count_ok(tg_interval unit, int64_t count);

#endif
