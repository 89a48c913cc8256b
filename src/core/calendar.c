/* calendar.c -- billing periods on the UTC calendar (see calendar.h).
 *
 * Civil dates convert to and from day numbers with Howard Hinnant's days_from_civil and
 * civil_from_days (proleptic Gregorian, exact for negative times too). A month boundary is
 * computed from the anchor alone: month index year * 12 + month - 1 plus k * count, the day
 * clamped to that month, the anchor's time of day. Finding the period that contains t
 * computes k arithmetically (elapsed seconds over the period length, or elapsed calendar
 * months over the months per period, then at most one step back), so the cost does not
 * grow with the number of periods since the anchor.
 */
#include "core/calendar.h"

#define DAY_SECONDS 86400

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                  /* [0, 399] */
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;          /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, tg_civil *c)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    c->day = (int)(doy - (153 * mp + 2) / 5 + 1);
    c->month = (int)(mp < 10 ? mp + 3 : mp - 9);
    c->year = yoe + era * 400 + (c->month <= 2);
}

tg_civil tg_civil_from_unix(int64_t t)
{
    tg_civil c;
    int64_t days = floor_div(t, DAY_SECONDS);
    int64_t secs = t - days * DAY_SECONDS;
    civil_from_days(days, &c);
    c.hour = (int)(secs / 3600);
    c.minute = (int)(secs / 60 % 60);
    c.second = (int)(secs % 60);
    return c;
}

int64_t tg_unix_from_civil(const tg_civil *c)
{
    return days_from_civil(c->year, c->month, c->day) * DAY_SECONDS + c->hour * 3600 +
           c->minute * 60 + c->second;
}

int tg_days_in_month(int64_t year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    return month == 2 && leap ? 29 : days[month - 1];
}

/* The time `months` calendar months after c, on `day` clamped to that month's length. */
static int64_t add_months(const tg_civil *c, int64_t months, int day)
{
    int64_t index = c->year * 12 + (c->month - 1) + months;
    tg_civil r = *c;
    r.year = floor_div(index, 12);
    r.month = (int)(index - r.year * 12) + 1;
    int dim = tg_days_in_month(r.year, r.month);
    r.day = day < dim ? day : dim;
    return tg_unix_from_civil(&r);
}

int64_t tg_period_boundary(int64_t anchor, tg_interval unit, int count, int day_of_month,
                           int64_t k)
{
    if (k == 0)
        return anchor;
    switch (unit) {
    case TG_INTERVAL_DAY:
        return anchor + k * count * DAY_SECONDS;
    case TG_INTERVAL_WEEK:
        return anchor + k * count * 7 * DAY_SECONDS;
    case TG_INTERVAL_MONTH:
    case TG_INTERVAL_YEAR:
        break;
    }
    tg_civil c = tg_civil_from_unix(anchor);
    int64_t months = k * count * (unit == TG_INTERVAL_YEAR ? 12 : 1);
    return add_months(&c, months, day_of_month ? day_of_month : c.day);
}

void tg_period_containing(int64_t anchor, tg_interval unit, int count, int day_of_month,
                          int64_t t, int64_t *start, int64_t *end)
{
    int64_t k;
    if (unit == TG_INTERVAL_DAY || unit == TG_INTERVAL_WEEK) {
        int64_t len = (int64_t)count * DAY_SECONDS * (unit == TG_INTERVAL_WEEK ? 7 : 1);
        k = floor_div(t - anchor, len);
    } else {
        tg_civil ca = tg_civil_from_unix(anchor), ct = tg_civil_from_unix(t);
        int64_t months = (ct.year - ca.year) * 12 + (ct.month - ca.month);
        k = floor_div(months, (int64_t)count * (unit == TG_INTERVAL_YEAR ? 12 : 1));
    }
    /* Exact for days and weeks. For months, boundary k + 1 falls in a later month than t,
     * and boundary k in t's month or earlier: it is one too high when it is later in t's
     * month than t. */
    if (tg_period_boundary(anchor, unit, count, day_of_month, k) > t)
        k--;
    *start = tg_period_boundary(anchor, unit, count, day_of_month, k);
    *end = tg_period_boundary(anchor, unit, count, day_of_month, k + 1);
}

int64_t tg_anchor_from_config(int64_t from, int day_of_month, int month, int hour, int minute,
                              int second)
{
    tg_civil c = tg_civil_from_unix(from);
    c.hour = hour;
    c.minute = minute;
    c.second = second;
    /* Try from's own month (or year), then the next one, which is always later than from. */
    int64_t step = 1;
    if (month) {
        c.month = month;
        step = 12;
    }
    int64_t t = add_months(&c, 0, day_of_month);
    return t > from ? t : add_months(&c, step, day_of_month);
}

bool tg_interval_count_ok(tg_interval unit, int64_t count)
{
    int64_t max = 0;
    switch (unit) {
    case TG_INTERVAL_DAY:
        max = 1095;
        break;
    case TG_INTERVAL_WEEK:
        max = 156;
        break;
    case TG_INTERVAL_MONTH:
        max = 36;
        break;
    case TG_INTERVAL_YEAR:
        max = 3;
        break;
    }
    return count >= 1 && count <= max;
}

/* Reads n decimal digits at *p into *out; false when any is not a digit. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

bool tg_parse_iso_time(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec;
    const char *p = s;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return false;
    if (*p != 'T' && *p != 't')
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return false;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p++ == '+' ? 1 : -1;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return false;
        offset = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p)
        return false;
    tg_civil c = {y, mo, d, h, mi, sec};
    *out = tg_unix_from_civil(&c) - offset;
    return true;
}
