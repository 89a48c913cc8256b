/* str.h -- bounded string copies for hot paths (snprintf("%s") costs a format parse). */
#ifndef TG_STR_H
#define TG_STR_H

#include <stddef.h>
#include <string.h>

/* Copies src into dst (size bytes, size > 0), truncating, always NUL-terminated. Returns the
 * number of bytes copied. */
static inline size_t tg_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

#endif
