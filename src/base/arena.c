/* arena.c -- chunked bump allocator (see arena.h). Chunks double from 4 KiB up to 1 MiB;
 * an allocation larger than a chunk gets a chunk of its own. */
#include "base/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct tg_arena_chunk {
    tg_arena_chunk *next;
    size_t size, used;
    max_align_t data[];
};

void tg_arena_init(tg_arena *a, size_t cap)
{
    a->head = NULL;
    a->used_total = 0;
    a->cap = cap;
}

void *tg_arena_alloc(tg_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    if (a->cap && (n > a->cap || a->used_total > a->cap - n))
        return NULL;
    tg_arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = c ? c->size * 2 : 4096;
        if (size > (1u << 20))
            size = 1u << 20;
        if (size < n)
            size = n;
        c = malloc(sizeof *c + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    a->used_total += n;
    return p;
}

char *tg_arena_strndup(tg_arena *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = tg_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *tg_arena_strdup(tg_arena *a, const char *s)
{
    return tg_arena_strndup(a, s, strlen(s));
}

void tg_arena_free(tg_arena *a)
{
    tg_arena_chunk *c = a->head;
    while (c) {
        tg_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_total = 0;
}

void tg_arena_reset(tg_arena *a)
{
    tg_arena_chunk *c = a->head;
    while (c && c->next) { /* the first chunk is the last in the list */
        tg_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    if (c && c->size > 4096) { /* a first allocation larger than a chunk: not worth keeping */
        free(c);
        c = NULL;
    }
    if (c)
        c->used = 0;
    a->head = c;
    a->used_total = 0;
}
