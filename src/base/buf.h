/* buf.h -- a growable byte buffer with a hard cap fixed at creation.
 *
 * Used for request bodies and response bodies. Appending past the cap fails (and sets the
 * sticky `failed` flag) instead of growing without bound, so a caller can append freely and
 * check once at the end.
 */
#ifndef TG_BUF_H
#define TG_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct tg_buf {
    char *data;  /* NUL-terminated when len < alloc */
    size_t len, alloc, cap;
    bool failed; /* an append did not fit or malloc failed */
} tg_buf;

/* Initialises an empty buffer that may hold at most cap bytes. */
void tg_buf_init(tg_buf *b, size_t cap);

int tg_buf_append_slow(tg_buf *b, const void *p, size_t n);

/* Appends n bytes; returns 0, or -1 (and sets failed) when over the cap or out of memory.
 * Inline when the bytes fit the memory already held: answers are built from many small
 * appends (a JSON object's punctuation a byte at a time). */
static inline int tg_buf_append(tg_buf *b, const void *p, size_t n)
{
    if (b->failed || n >= b->alloc - b->len || n > b->cap - b->len)
        return tg_buf_append_slow(b, p, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Appends a NUL-terminated string. */
static inline int tg_buf_puts(tg_buf *b, const char *s)
{
    return tg_buf_append(b, s, strlen(s));
}

/* Appends v in decimal (the JSON writer's integers, the response's status and length: printf
 * cost ten times as much, measured). */
int tg_buf_put_int(tg_buf *b, int64_t v);

/* Appends printf-formatted text. */
int tg_buf_printf(tg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties the buffer, keeping its memory. */
void tg_buf_reset(tg_buf *b);

/* Releases the memory; the buffer is empty and reusable. */
void tg_buf_free(tg_buf *b);

#endif
