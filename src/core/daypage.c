/* daypage.c -- encoding and merging of day pages, and delta runs (see daypage.h). A merge is
 * a single pass over the old entries and the (sorted) deltas, like merging two sorted lists;
 * the old entries no delta touches are copied as bytes, not decoded and encoded again. A
 * delta run shares the entry encoding, with offsets not bounded by a day. */
#include "core/daypage.h"

#include <stdbool.h>
#include <string.h>

#include "core/varint.h"

static int get_varint(tg_daypage_reader *r, unsigned __int128 *out)
{
    return tg_varint_get(&r->p, r->end, out);
}

void tg_daypage_open(tg_daypage_reader *r, int64_t day, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->minute = day - 60; /* the first offset counts from the day's start */
}

int tg_daypage_next(tg_daypage_reader *r, tg_delta *out)
{
    if (r->p == r->end)
        return 0;
    unsigned __int128 off, c;
    tg_dec sum;
    if (get_varint(r, &off) || off == 0 || off > 1440 ||
        tg_dec_get_compact(&r->p, r->end, &sum) || get_varint(r, &c))
        return -1;
    r->minute += (int64_t)off * 60;
    out->minute = r->minute;
    out->sum = sum;
    out->count = (int64_t)tg_unzigzag(c);
    return 1;
}

static void put_minute(tg_buf *out, int64_t *prev, int64_t minute)
{
    tg_varint_put(out, (unsigned __int128)((minute - *prev) / 60));
    *prev = minute;
}

static void put_entry(tg_buf *out, int64_t *prev, const tg_delta *d)
{
    put_minute(out, prev, d->minute);
    tg_dec_put_compact(out, d->sum);
    tg_varint_put(out, tg_zigzag(d->count));
}

/* An entry of the old page as it is stored: its minute and the bytes of its sum and count.
 * Entries that no delta touches are copied as bytes (only the minute offset before them can
 * change), so a merge decodes and encodes only the minutes it changes. */
typedef struct raw_entry {
    int64_t minute;
    const unsigned char *val;
    size_t vlen;
} raw_entry;

/* Steps over one varint of at most 128 bits; 0, or -1 when truncated or too long. */
static int skip_varint(tg_daypage_reader *r)
{
    for (int i = 0; i < 19; i++) {
        if (r->p >= r->end)
            return -1;
        if (!(*r->p++ & 0x80))
            return 0;
    }
    return -1;
}

/* As tg_daypage_next without decoding the value: 1, 0 at the end, -1 when corrupt. */
static int raw_next(tg_daypage_reader *r, raw_entry *e)
{
    if (r->p == r->end)
        return 0;
    unsigned __int128 off;
    if (get_varint(r, &off) || off == 0 || off > 1440)
        return -1;
    r->minute += (int64_t)off * 60;
    e->minute = r->minute;
    e->val = r->p;
    if (r->p >= r->end || *r->p++ > TG_DEC_SCALE_DIGITS || skip_varint(r) || skip_varint(r))
        return -1;
    e->vlen = (size_t)(r->p - e->val);
    return 1;
}

/* Adds the stored value of e to d. */
static int add_raw(const raw_entry *e, tg_delta *d)
{
    const unsigned char *p = e->val, *end = e->val + e->vlen;
    tg_dec sum;
    unsigned __int128 c;
    if (tg_dec_get_compact(&p, end, &sum) || tg_varint_get(&p, end, &c) ||
        tg_dec_add(d->sum, sum, &d->sum) ||
        __builtin_add_overflow(d->count, (int64_t)tg_unzigzag(c), &d->count))
        return -1;
    return 0;
}

int tg_daypage_merge(int64_t day, const void *old, size_t oldlen, const tg_delta *deltas,
                     size_t n, tg_buf *out)
{
    tg_daypage_reader r;
    tg_daypage_open(&r, day, old, oldlen);
    raw_entry cur;
    int have = raw_next(&r, &cur);
    int64_t prev = day - 60;
    size_t k = 0;
    while (have == 1 || k < n) {
        if (have == 1 && (k == n || cur.minute < deltas[k].minute)) {
            put_minute(out, &prev, cur.minute); /* untouched: its value bytes as they are */
            tg_buf_append(out, cur.val, cur.vlen);
            have = raw_next(&r, &cur);
            continue;
        }
        tg_delta e = deltas[k++];
        if (e.minute < day || e.minute >= day + 86400 || e.minute % 60)
            return -1;
        if (have == 1 && cur.minute == e.minute) {
            if (add_raw(&cur, &e))
                return -1;
            have = raw_next(&r, &cur);
        }
        /* Several deltas of one minute arrive together from replays: fold them. */
        while (k < n && deltas[k].minute == e.minute) {
            if (tg_dec_add(e.sum, deltas[k].sum, &e.sum) ||
                __builtin_add_overflow(e.count, deltas[k].count, &e.count))
                return -1;
            k++;
        }
        if (e.count != 0)
            put_entry(out, &prev, &e);
    }
    if (have < 0)
        return -1;
    return out->failed ? -1 : 0;
}

/* ---------------------------------------------------------------- delta runs */

#define RUN_FIRST INT64_MIN       /* reader state: no entry read yet */
#define RUN_MAX_MINUTES (INT64_C(1) << 40) /* |minute index| bound: far past any timestamp */

int tg_deltarun_put(tg_buf *out, const tg_delta *d, size_t n)
{
    int64_t prev = 0;
    bool first = true;
    for (size_t i = 0; i < n;) {
        tg_delta e = d[i++];
        while (i < n && d[i].minute == e.minute) {
            if (tg_dec_add(e.sum, d[i].sum, &e.sum) ||
                __builtin_add_overflow(e.count, d[i].count, &e.count))
                return -1;
            i++;
        }
        if (e.minute % 60 || e.minute / 60 <= -RUN_MAX_MINUTES ||
            e.minute / 60 >= RUN_MAX_MINUTES ||
            (!first && (e.minute <= prev || (e.minute - prev) / 60 >= RUN_MAX_MINUTES)))
            return -1; /* the reader's bounds: what is written can be read back */
        if (first)
            tg_varint_put(out, tg_zigzag(e.minute / 60));
        else
            tg_varint_put(out, (unsigned __int128)((e.minute - prev) / 60));
        prev = e.minute;
        first = false;
        tg_dec_put_compact(out, e.sum);
        tg_varint_put(out, tg_zigzag(e.count));
    }
    return out->failed ? -1 : 0;
}

void tg_deltarun_open(tg_daypage_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->minute = RUN_FIRST;
}

/* Reads the next entry's minute into r->minute, leaving r->p on its value: 1, 0 at the end,
 * -1 when corrupt. */
static int run_step(tg_daypage_reader *r)
{
    if (r->p == r->end)
        return 0;
    unsigned __int128 off;
    if (get_varint(r, &off))
        return -1;
    int64_t index;
    if (r->minute == RUN_FIRST) {
        __int128 v = tg_unzigzag(off);
        if (v <= -RUN_MAX_MINUTES || v >= RUN_MAX_MINUTES)
            return -1;
        index = (int64_t)v;
    } else {
        if (off == 0 || off >= (unsigned __int128)RUN_MAX_MINUTES)
            return -1;
        index = r->minute / 60 + (int64_t)off;
        if (index >= RUN_MAX_MINUTES)
            return -1;
    }
    r->minute = index * 60;
    return 1;
}

int tg_deltarun_next(tg_daypage_reader *r, tg_delta *out)
{
    return tg_deltarun_next_from(r, INT64_MIN, out);
}

int tg_deltarun_next_from(tg_daypage_reader *r, int64_t from, tg_delta *out)
{
    int rc;
    while ((rc = run_step(r)) == 1 && r->minute < from)
        if (r->p >= r->end || *r->p++ > TG_DEC_SCALE_DIGITS || skip_varint(r) || skip_varint(r))
            return -1;
    if (rc != 1)
        return rc;
    unsigned __int128 c;
    tg_dec sum;
    if (tg_dec_get_compact(&r->p, r->end, &sum) || get_varint(r, &c))
        return -1;
    __int128 count = tg_unzigzag(c);
    if (count < INT64_MIN || count > INT64_MAX)
        return -1;
    out->minute = r->minute;
    out->sum = sum;
    out->count = (int64_t)count;
    return 1;
}
