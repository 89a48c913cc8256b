/* jsonw.h -- a streaming JSON writer into a capped buffer.
 *
 * Responses are written directly, in field order, without building a document: cheaper than a
 * DOM and it lets exact decimals go out as JSON numbers digit for digit (jw_raw). Commas are
 * tracked per nesting level; escaping follows RFC 8259 (quote, backslash, control characters).
 * Errors are sticky in the buffer (b->failed).
 */
#ifndef TG_HTTP_JSONW_H
#define TG_HTTP_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define TG_JW_MAX_DEPTH 32

typedef struct tg_jw {
    tg_buf *b;
    int depth;
    bool comma[TG_JW_MAX_DEPTH];
    void *ctx; /* the writer's owner, for its renderers (a request's writer: the request) */
} tg_jw;

void jw_init(tg_jw *w, tg_buf *b);
void jw_obj(tg_jw *w);  /* { */
void jw_end(tg_jw *w);  /* } */
void jw_arr(tg_jw *w);  /* [ */
void jw_aend(tg_jw *w); /* ] */
void jw_key(tg_jw *w, const char *key);
/* A key of len bytes already escaped as JSON (the text between its quotes). */
void jw_key_escaped(tg_jw *w, const char *text, size_t len);
void jw_str(tg_jw *w, const char *s); /* NULL writes null */
void jw_int(tg_jw *w, int64_t v);
void jw_bool(tg_jw *w, bool v);
void jw_null(tg_jw *w);
void jw_raw(tg_jw *w, const char *text); /* a number or literal, written as is */
void jw_rawn(tg_jw *w, const char *text, size_t len); /* the same, of len bytes */
/* ISO-8601 UTC with milliseconds ("2024-06-01T12:00:00.000Z"), as /v2 writes times. */
void jw_iso_time(tg_jw *w, int64_t unix_seconds);

/* key: value shorthands. */
void jw_kstr(tg_jw *w, const char *key, const char *s);
void jw_kint(tg_jw *w, const char *key, int64_t v);
void jw_kbool(tg_jw *w, const char *key, bool v);
void jw_knull(tg_jw *w, const char *key);
/* An integer, or null when v == 0. */
void jw_kint_or_null(tg_jw *w, const char *key, int64_t v);

#endif
