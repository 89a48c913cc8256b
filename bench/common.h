/* common.h -- what the load generator and the PostgreSQL baseline must share.
 *
 * Above all the event shape: the k-th event of a connection goes to meter k % M and customer
 * (k / M) % C, carries the value "<k%97>.<(k*7)%1000>" and, with a spread of D days, a
 * timestamp spread over the last D days by a hash of (run, thread, k). Both tools call
 * bench_event(), so Tollgate and the baseline always store exactly the same events.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *bench_prog = "bench"; /* set by main: the prefix of fatal messages */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", bench_prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* splitmix64's finaliser: spreads timestamps evenly whatever the run id, thread and sequence. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* FNV-1a of a run id (computed once per run). */
static uint64_t run_hash_of(const char *run_id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = run_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    return h;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Text appenders for the clients' per-event formatting: each writes at p and returns the end
 * (no NUL). printf and strftime were two thirds of the load generator's CPU (perf), a
 * quarter of what the machine spent per streamed event; both clients format the same way. */
static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, unsigned long long v)
{
    char digits[20];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        *p++ = digits[--n];
    return p;
}

static char *put_2digits(char *p, int v)
{
    *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* An event's unique identifier: "RUN-THREAD-K". */
static char *put_identifier(char *p, const char *run_id, int thread, unsigned long long k)
{
    p = put_str(p, run_id);
    *p++ = '-';
    p = put_u64(p, (unsigned long long)thread);
    *p++ = '-';
    return put_u64(p, k);
}

/* "YYYY-MM-DD" sep "HH:MM:SS" of Unix time t, UTC (civil from days: Howard Hinnant's
 * algorithm; years 0-9999). */
static char *put_utc(char *p, int64_t t, char sep)
{
    int64_t days = t / 86400, secs = t % 86400;
    if (secs < 0)
        secs += 86400, days--;
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    p = put_2digits(p, year / 100);
    p = put_2digits(p, year % 100);
    *p++ = '-';
    p = put_2digits(p, month);
    *p++ = '-';
    p = put_2digits(p, day);
    *p++ = sep;
    p = put_2digits(p, (int)(secs / 3600));
    *p++ = ':';
    p = put_2digits(p, (int)(secs / 60 % 60));
    *p++ = ':';
    return put_2digits(p, (int)(secs % 60));
}

/* The k-th event of thread `thread` (see the top of this file): indexes of its meter and
 * customer, its value (value must hold 32 bytes) and its timestamp. */
static void bench_event(uint64_t run_hash, int thread, unsigned long long k, int nmeters,
                        int ncustomers, int spread_days, int64_t now, int *meter, int *customer,
                        char *value, int64_t *ts)
{
    *meter = (int)(k % (unsigned)nmeters);
    *customer = (int)((k / (unsigned)nmeters) % (unsigned)ncustomers);
    char *v = put_u64(value, k % 97); /* "%llu.%03llu" */
    unsigned frac = (unsigned)((k * 7) % 1000);
    *v++ = '.';
    *v++ = (char)('0' + frac / 100);
    v = put_2digits(v, (int)(frac % 100));
    *v = '\0';
    *ts = now;
    if (spread_days > 0) {
        int64_t span = (int64_t)spread_days * 86400;
        uint64_t h = mix64(run_hash ^ ((uint64_t)thread << 40) ^ k);
        *ts = now - 120 - (int64_t)(h % (uint64_t)span);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#endif
