/* varint.h -- the integer and decimal encodings shared by event blocks and day pages.
 *
 * Unsigned integers are LEB128 varints (7 bits a byte, high bit = more), signed ones are
 * zigzag-encoded first so small magnitudes stay short. An exact decimal is stored as a scale
 * byte (0..12 fractional digits) and the zigzag mantissa with trailing zeros dropped: "12.5"
 * is scale 1, mantissa 125. Readers check every byte against the end and refuse values that
 * would overflow instead of wrapping.
 */
#ifndef TG_VARINT_H
#define TG_VARINT_H

#include <stdint.h>

#include "base/buf.h"
#include "core/decimal.h"

static inline void tg_varint_put(tg_buf *b, unsigned __int128 v)
{
    unsigned char tmp[19];
    size_t n = 0;
    if (!(v >> 64)) { /* nearly every value: 64-bit shifts are half the work of 128-bit ones */
        uint64_t u = (uint64_t)v;
        for (; u >= 0x80; u >>= 7)
            tmp[n++] = (unsigned char)(u | 0x80);
        tmp[n++] = (unsigned char)u;
    } else {
        do {
            unsigned char byte = (unsigned char)(v & 0x7f);
            v >>= 7;
            tmp[n++] = byte | (v ? 0x80 : 0);
        } while (v);
    }
    tg_buf_append(b, tmp, n);
}

/* Reads a varint at *p (advanced past it); 0, or -1 when truncated or longer than 128 bits.
 * Most varints (minute offsets, counts, scales) are one byte and nearly all fit 64 bits, so
 * those are read without 128-bit shifts: they were a sixth of a month's summary. */
static inline int tg_varint_get(const unsigned char **p, const unsigned char *end,
                                unsigned __int128 *out)
{
    const unsigned char *q = *p;
    if (q < end && !(*q & 0x80)) {
        *out = *q;
        *p = q + 1;
        return 0;
    }
    uint64_t low = 0;
    int shift = 0;
    for (; shift < 63; shift += 7) { /* nine bytes: 63 bits */
        if (q >= end)
            return -1;
        unsigned char byte = *q++;
        low |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = low;
            *p = q;
            return 0;
        }
    }
    unsigned __int128 v = low;
    for (; shift < 133; shift += 7) {
        if (q >= end)
            return -1;
        unsigned char byte = *q++;
        v |= (unsigned __int128)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            *p = q;
            return 0;
        }
    }
    return -1;
}

static inline unsigned __int128 tg_zigzag(__int128 v)
{
    return v < 0 ? ((unsigned __int128)(-(v + 1)) << 1) | 1 : (unsigned __int128)v << 1;
}

static inline __int128 tg_unzigzag(unsigned __int128 u)
{
    return (u & 1) ? -(__int128)(u >> 1) - 1 : (__int128)(u >> 1);
}

static inline void tg_dec_put_compact(tg_buf *b, tg_dec d)
{
    int scale = TG_DEC_SCALE_DIGITS;
    if (d >= INT64_MIN && d <= INT64_MAX) {
        /* Most values fit 64 bits, where dividing by a constant is a multiplication; 128-bit
         * divisions were the most of a day page's merge time. */
        int64_t v = (int64_t)d;
        while (scale >= 4 && v % 10000 == 0) {
            v /= 10000;
            scale -= 4;
        }
        while (scale > 0 && v % 10 == 0) {
            v /= 10;
            scale--;
        }
        d = v;
    } else {
        while (scale > 0 && d % 10 == 0) {
            d /= 10;
            scale--;
        }
    }
    unsigned char sc = (unsigned char)scale;
    tg_buf_append(b, &sc, 1);
    tg_varint_put(b, tg_zigzag(d));
}

static inline int tg_dec_get_compact(const unsigned char **p, const unsigned char *end,
                                     tg_dec *out)
{
    if (*p >= end || **p > TG_DEC_SCALE_DIGITS)
        return -1;
    int scale = *(*p)++;
    unsigned __int128 v;
    if (tg_varint_get(p, end, &v))
        return -1;
    static const int64_t pow10[TG_DEC_SCALE_DIGITS + 1] = {
        1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
        10000000000, 100000000000, 1000000000000};
    tg_dec m = (tg_dec)tg_unzigzag(v);
    if (__builtin_mul_overflow(m, (tg_dec)pow10[TG_DEC_SCALE_DIGITS - scale], &m))
        return -1;
    *out = m;
    return 0;
}

#endif
