/* arena.h -- a bump allocator for request-scoped memory.
 *
 * Everything a request decodes (parameter trees, strings, result rows) comes from its arena
 * and is released at once when the request ends. Allocations never fail silently: they return
 * NULL when the arena's cap is reached or malloc fails, and callers map that to TG_ENOMEM.
 */
#ifndef TG_ARENA_H
#define TG_ARENA_H

#include <stddef.h>

typedef struct tg_arena_chunk tg_arena_chunk;
typedef struct tg_arena {
    tg_arena_chunk *head;
    size_t used_total; /* bytes handed out, checked against cap */
    size_t cap;        /* 0 = no cap */
} tg_arena;

/* Initialises an empty arena that hands out at most cap bytes (0 = unlimited). */
void tg_arena_init(tg_arena *a, size_t cap);

/* Returns n bytes aligned for any type, valid until tg_arena_free(); NULL when out of room. */
void *tg_arena_alloc(tg_arena *a, size_t n);

/* Returns a NUL-terminated copy of s[0..len) in the arena, or NULL. */
char *tg_arena_strndup(tg_arena *a, const char *s, size_t len);

/* Returns a NUL-terminated copy of s, or NULL. */
char *tg_arena_strdup(tg_arena *a, const char *s);

/* Releases every allocation; the arena can be reused afterwards. */
void tg_arena_free(tg_arena *a);

/* Releases every allocation but keeps the first chunk (4 KiB) for the next user: what a
 * recycled request needs, without a malloc. */
void tg_arena_reset(tg_arena *a);

#endif
