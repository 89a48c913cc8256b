/* daypage.c -- encoding and merging of day pages (see daypage.h). A merge is a single pass
 * over the old entries and the (sorted) deltas, like merging two sorted lists. */
#include "core/daypage.h"

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

static void put_entry(tg_buf *out, int64_t *prev, const tg_delta *d)
{
    tg_varint_put(out, (unsigned __int128)((d->minute - *prev) / 60));
    *prev = d->minute;
    tg_dec_put_compact(out, d->sum);
    tg_varint_put(out, tg_zigzag(d->count));
}

int tg_daypage_merge(int64_t day, const void *old, size_t oldlen, const tg_delta *deltas,
                     size_t n, tg_buf *out)
{
    tg_daypage_reader r;
    tg_daypage_open(&r, day, old, oldlen);
    tg_delta cur;
    int have = tg_daypage_next(&r, &cur);
    int64_t prev = day - 60;
    size_t k = 0;
    while (have == 1 || k < n) {
        tg_delta e;
        if (have == 1 && (k == n || cur.minute < deltas[k].minute)) {
            e = cur;
            have = tg_daypage_next(&r, &cur);
        } else {
            e = deltas[k++];
            if (e.minute < day || e.minute >= day + 86400 || e.minute % 60)
                return -1;
            if (have == 1 && cur.minute == e.minute) {
                if (tg_dec_add(cur.sum, e.sum, &e.sum) ||
                    __builtin_add_overflow(cur.count, e.count, &e.count))
                    return -1;
                have = tg_daypage_next(&r, &cur);
            }
            /* Several deltas of one minute arrive together from replays: fold them. */
            while (k < n && deltas[k].minute == e.minute) {
                if (tg_dec_add(e.sum, deltas[k].sum, &e.sum) ||
                    __builtin_add_overflow(e.count, deltas[k].count, &e.count))
                    return -1;
                k++;
            }
        }
        if (e.count != 0)
            put_entry(out, &prev, &e);
    }
    if (have < 0)
        return -1;
    return out->failed ? -1 : 0;
}
