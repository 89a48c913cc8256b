/* eventblock.h -- the compact storage format of a batch of meter events.
 *
 * Events acknowledged together are stored together, in blocks: a row per batch (per 1,024
 * events of it: see writer.c) instead of a row (and index entry) per event is what lets a
 * group commit take hundreds of thousands of events a second. A block holds, per event: the
 * identifier, the meter and the customer as small integers (their row numbers), the timestamp
 * as a difference from the block's first, the value as an exact decimal (mantissa and scale),
 * and any other payload keys verbatim. All integers are LEB128 varints, signed ones
 * zigzag-encoded. About 40 bytes for a typical event.
 *
 *   u8 version (1) | varint count | zigzag base_ts |
 *   count x { varint id_len, id | varint meter | varint customer | zigzag ts - base_ts |
 *             u8 scale | zigzag mantissa (up to 128 bits) | varint nextra, nextra x
 *             { varint klen, key | varint vlen, value } }
 */
#ifndef TG_EVENTBLOCK_H
#define TG_EVENTBLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "core/decimal.h"
#include "core/model.h"

typedef struct tg_block {
    tg_buf body;
    size_t count;
    int64_t base_ts;
} tg_block;

typedef struct tg_block_event {
    const char *identifier; /* not NUL-terminated */
    size_t identifier_len;
    uint64_t meter_seq, customer_seq;
    int64_t timestamp;
    tg_dec value;
    size_t nextra;
    const unsigned char *extra; /* nextra encoded key/value pairs */
    const unsigned char *extra_end;
} tg_block_event;

typedef struct tg_block_reader {
    const unsigned char *p, *end;
    size_t remaining;
    int64_t base_ts;
} tg_block_reader;

/* Starts an empty block (body capped at cap bytes). */
void tg_block_init(tg_block *b, size_t cap);
void tg_block_free(tg_block *b);

/* Appends one event; extras are the payload keys the meter does not interpret (may be NULL).
 * Returns 0, or -1 when the block is full. */
int tg_block_add(tg_block *b, const char *identifier, uint64_t meter_seq, uint64_t customer_seq,
                 int64_t timestamp, tg_dec value, const tg_metadata *extras);

/* Writes the finished block (header and events) to out. */
int tg_block_finish(const tg_block *b, tg_buf *out);

/* Writes count events of b, whose encodings are the body's bytes [from, to), as a block of
 * their own: events are encoded against the block's base timestamp, which the part's header
 * repeats, so a part is a slice of the body. from and to must be offsets between events. */
int tg_block_finish_part(const tg_block *b, size_t count, size_t from, size_t to, tg_buf *out);

/* Opens a block for reading. Returns 0, or -1 when the header is corrupt. */
int tg_block_open(tg_block_reader *r, const void *data, size_t len);

/* Reads the next event: 1 when one was read, 0 at the end, -1 when the block is corrupt. */
int tg_block_next(tg_block_reader *r, tg_block_event *e);

/* Reads extra pair i of e into key/value (not NUL-terminated; lengths out). */
int tg_block_extra(const tg_block_event *e, size_t i, const char **key, size_t *klen,
                   const char **value, size_t *vlen);

#endif
