/* daypage.h -- the stored usage of one (meter, customer) for one UTC day.
 *
 * Additive meters (sum, count) keep their stored minute buckets as one row per pair and day:
 * a compact list of the minutes that have usage, each with its exact sum and event count.
 * Folding rewrites a day's row once however many events it takes in, and a month's
 * summary reads about 31 rows. Entries are sorted by minute; each is a varint minute offset
 * from the previous entry (the first from the start of the day), the sum as scale byte plus
 * zigzag mantissa (as in event blocks), and the count as a zigzag varint.
 */
#ifndef TG_DAYPAGE_H
#define TG_DAYPAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "core/overlay.h"

/* Merges deltas (minute ascending, all within [day, day + 86400)) into the page old[0..oldlen)
 * (may be empty) and writes the new page to out. Entries whose count falls to 0 are dropped.
 * Returns 0, or -1 when old is corrupt, a sum overflows, or out is full. */
int tg_daypage_merge(int64_t day, const void *old, size_t oldlen, const tg_delta *deltas,
                     size_t n, tg_buf *out);

typedef struct tg_daypage_reader {
    const unsigned char *p, *end;
    int64_t minute; /* of the last entry read */
} tg_daypage_reader;

void tg_daypage_open(tg_daypage_reader *r, int64_t day, const void *data, size_t len);

/* Reads the next entry: 1 when read, 0 at the end, -1 when the page is corrupt. */
int tg_daypage_next(tg_daypage_reader *r, tg_delta *out);

/* Delta runs: a pair's spilled live usage (core/writer.c), deltas of any minutes. Entries are
 * encoded as in a page, except that the first minute offset is counted from minute 0 (as a
 * zigzag varint), later ones from the entry before without a bound, and entries whose count
 * is 0 are kept: a delta's sum need not be 0 when its count is (an event recorded and another
 * of the same minute canceled). tg_deltarun_put appends d[0..n) (minute ascending; equal
 * minutes are added together) and returns 0, or -1 when a sum overflows or out is full. */
int tg_deltarun_put(tg_buf *out, const tg_delta *d, size_t n);
void tg_deltarun_open(tg_daypage_reader *r, const void *data, size_t len);
/* Reads the next delta: 1 when read, 0 at the end, -1 when the run is corrupt. _from steps
 * over the entries before minute `from` without decoding their values. */
int tg_deltarun_next(tg_daypage_reader *r, tg_delta *out);
int tg_deltarun_next_from(tg_daypage_reader *r, int64_t from, tg_delta *out);

#endif
