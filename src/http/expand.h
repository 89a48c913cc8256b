/* expand.h -- Stripe's expand[]: ids in a response replaced by the objects they name.
 *
 * A handler reads expand[] with p_expand(req, type) (or p_page for a list), which refuses a
 * path its object does not have before anything runs. Renderers write an expandable id with
 * tg_expand_ref(), which writes the object instead when the request asked for it, and mark
 * where they are inside nested objects and lists with tg_expand_enter/leave, so that
 * "items.data.price.product" or "data.customer" find their field. A writer that is not a
 * request's (ctx NULL) expands nothing.
 */
#ifndef TG_HTTP_EXPAND_H
#define TG_HTTP_EXPAND_H

#include <stdbool.h>
#include <stddef.h>

#include "http/jsonw.h"

#define TG_EXPAND_MAX 20  /* paths in one request */
#define TG_EXPAND_DEPTH 4 /* expanded fields along one path, as Stripe allows */
#define TG_EXPAND_NEST 16 /* nested values the renderers follow */

typedef struct tg_req tg_req;

typedef struct tg_expand {
    const char *paths[TG_EXPAND_MAX]; /* as requested, each checked against the object */
    size_t n;
    char at[256]; /* where the renderers are: "" at the top, else "field.field." */
    size_t at_len;
    size_t marks[TG_EXPAND_NEST]; /* at_len before each enter */
    int depth;
    int lost; /* enters past what `at` can hold: nothing below them is expanded */
    bool search;      /* a search answer: expand[]=total_count is taken (tg_expand_read) */
    bool total_count; /* ... and was asked for */
} tg_expand;

/* Loads the object named id and writes it as a value into req->jw; false (having written
 * nothing) when it cannot be loaded, and the id is written instead. */
typedef bool (*tg_expander)(tg_req *req, const char *id);

/* Reads expand[] (a string or an array of strings) for an object of `type` (a list of them
 * when list), checking every path; false with the error set when one cannot be expanded.
 * With req->expand.search set, "total_count" is taken too (setting expand.total_count). */
bool tg_expand_read(tg_req *req, const char *type, bool list);

/* Writes key: id, or key: the object when the request asked for it. id NULL writes null. */
void tg_expand_ref(tg_jw *w, const char *key, const char *id, tg_expander fn);
/* Whether the request asked for `key` here (an includable field such as a price's tiers). */
bool tg_expand_wants(tg_jw *w, const char *key);
/* The renderer goes into the value of `key` ("items.data" for a list's elements). */
void tg_expand_enter(tg_jw *w, const char *key);
void tg_expand_leave(tg_jw *w);

#endif
