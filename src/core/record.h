/* record.h -- the storage encoding of billing objects: tagged fields, like a tiny protobuf.
 *
 * A record is a sequence of fields; each starts with a varint key (tag << 2 | kind) where kind
 * is an integer (zigzag varint), bytes (varint length, then the bytes; strings, nested records)
 * or an exact decimal (varint.h's compact form). Readers skip tags they do not know, so a
 * field can be added without migrating stored rows; a tag is never reused for another meaning.
 * Absent strings are simply not written (they read back as NULL). The store keeps records as
 * opaque blobs next to the few columns it indexes (store.h: tg_obj).
 */
#ifndef TG_RECORD_H
#define TG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "core/decimal.h"

#define TG_RECORD_MAX (8u << 20) /* the largest stored object (an invoice's many lines) */

enum { TG_REC_INT = 0, TG_REC_BYTES = 1, TG_REC_DEC = 2 };

void tg_rec_int(tg_buf *b, unsigned tag, int64_t v);
/* Writes nothing when s is NULL. */
void tg_rec_str(tg_buf *b, unsigned tag, const char *s);
void tg_rec_bytes(tg_buf *b, unsigned tag, const void *p, size_t len);
void tg_rec_dec(tg_buf *b, unsigned tag, tg_dec d);

typedef struct tg_rec_reader {
    const unsigned char *p, *end;
} tg_rec_reader;

typedef struct tg_rec_field {
    unsigned tag;
    int kind;
    int64_t i;               /* TG_REC_INT */
    tg_dec d;                /* TG_REC_DEC */
    const unsigned char *data; /* TG_REC_BYTES */
    size_t len;
} tg_rec_field;

void tg_rec_open(tg_rec_reader *r, const void *data, size_t len);
/* 1: a field was read; 0: end of record; -1: corrupt. */
int tg_rec_next(tg_rec_reader *r, tg_rec_field *f);
/* A bytes field as a NUL-terminated string in a (NULL when out of memory). */
char *tg_rec_strdup(const tg_rec_field *f, tg_arena *a);
/* A bytes field copied into a fixed buffer (truncated to cap - 1). */
void tg_rec_copy(const tg_rec_field *f, char *dst, size_t cap);

#endif
