/* daypage.c -- encoding and merging of day pages (see daypage.h). A merge is a single pass
 * over the old entries and the (sorted) deltas, like merging two sorted lists. */
#include "core/daypage.h"

#include <string.h>

static void put_varint(tg_buf *b, unsigned __int128 v)
{
    unsigned char tmp[19];
    size_t n = 0;
    do {
        unsigned char byte = (unsigned char)(v & 0x7f);
        v >>= 7;
        tmp[n++] = byte | (v ? 0x80 : 0);
    } while (v);
    tg_buf_append(b, tmp, n);
}

static unsigned __int128 zigzag(__int128 v)
{
    return v < 0 ? ((unsigned __int128)(-(v + 1)) << 1) | 1 : (unsigned __int128)v << 1;
}

static __int128 unzigzag(unsigned __int128 u)
{
    return (u & 1) ? -(__int128)(u >> 1) - 1 : (__int128)(u >> 1);
}

static int get_varint(tg_daypage_reader *r, unsigned __int128 *out)
{
    unsigned __int128 v = 0;
    for (int shift = 0; shift < 133; shift += 7) {
        if (r->p >= r->end)
            return -1;
        unsigned char byte = *r->p++;
        v |= (unsigned __int128)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
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
    unsigned __int128 off, m, c;
    if (get_varint(r, &off) || off == 0 || off > 1440 || r->p >= r->end)
        return -1;
    int scale = *r->p++;
    if (scale > TG_DEC_SCALE_DIGITS || get_varint(r, &m) || get_varint(r, &c))
        return -1;
    r->minute += (int64_t)off * 60;
    tg_dec sum = (tg_dec)unzigzag(m);
    for (int i = scale; i < TG_DEC_SCALE_DIGITS; i++)
        if (__builtin_mul_overflow(sum, 10, &sum))
            return -1;
    out->minute = r->minute;
    out->sum = sum;
    out->count = (int64_t)unzigzag(c);
    return 1;
}

static void put_entry(tg_buf *out, int64_t *prev, const tg_delta *d)
{
    put_varint(out, (unsigned __int128)((d->minute - *prev) / 60));
    *prev = d->minute;
    int scale = TG_DEC_SCALE_DIGITS;
    tg_dec m = d->sum;
    while (scale > 0 && m % 10 == 0) {
        m /= 10;
        scale--;
    }
    unsigned char sc = (unsigned char)scale;
    tg_buf_append(out, &sc, 1);
    put_varint(out, zigzag(m));
    put_varint(out, zigzag(d->count));
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
