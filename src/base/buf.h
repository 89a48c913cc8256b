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

typedef struct tg_buf {
    char *data;  /* NUL-terminated when len < alloc */
    size_t len, alloc, cap;
    bool failed; /* an append did not fit or malloc failed */
} tg_buf;

/* Initialises an empty buffer that may hold at most cap bytes. */
void tg_buf_init(tg_buf *b, size_t cap);

/* Appends n bytes; returns 0, or -1 (and sets failed) when over the cap or out of memory. */
int tg_buf_append(tg_buf *b, const void *p, size_t n);

/* Appends a NUL-terminated string. */
int tg_buf_puts(tg_buf *b, const char *s);

/* Appends printf-formatted text. */
int tg_buf_printf(tg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties the buffer, keeping its memory. */
void tg_buf_reset(tg_buf *b);

/* Releases the memory; the buffer is empty and reusable. */
void tg_buf_free(tg_buf *b);

#endif
