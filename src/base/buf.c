/* buf.c -- capped growable buffer (see buf.h). Growth doubles; the terminating NUL is kept
 * so text can be handed to C string functions without a copy. */
#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_buf_init(tg_buf *b, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
}

static int reserve(tg_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (extra > b->cap || b->len > b->cap - extra) {
        b->failed = true;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return 0;
    size_t n = b->alloc ? b->alloc : 256;
    while (n < need)
        n *= 2;
    char *p = realloc(b->data, n);
    if (!p) {
        b->failed = true;
        return -1;
    }
    b->data = p;
    b->alloc = n;
    return 0;
}

int tg_buf_append_slow(tg_buf *b, const void *p, size_t n)
{
    if (reserve(b, n))
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Two digits a step, from a table: a page of summaries writes two times an object, and a
 * digit a step was a tenth of its instructions. */
int tg_buf_put_int(tg_buf *b, int64_t v)
{
    static const char pairs[201] =
        "00010203040506070809101112131415161718192021222324"
        "25262728293031323334353637383940414243444546474849"
        "50515253545556575859606162636465666768697071727374"
        "75767778798081828384858687888990919293949596979899";
    char digits[21], *p = digits + sizeof digits;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    for (; u >= 100; u /= 100) {
        p -= 2;
        memcpy(p, pairs + 2 * (u % 100), 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * u, 2);
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        *--p = '-';
    return tg_buf_append(b, p, (size_t)(digits + sizeof digits - p));
}

int tg_buf_printf(tg_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return -1;
    }
    if ((size_t)n < sizeof small)
        return tg_buf_append(b, small, (size_t)n);
    if (reserve(b, (size_t)n))
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void tg_buf_reset(tg_buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}

void tg_buf_free(tg_buf *b)
{
    free(b->data);
    size_t cap = b->cap;
    tg_buf_init(b, cap);
}

