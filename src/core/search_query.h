/* search_query.h -- Stripe's search query language: parsing a query against a resource's
 * fields, and matching objects with it (see search_query.c).
 */
#ifndef TG_SEARCH_QUERY_H
#define TG_SEARCH_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

#define TG_SEARCH_CLAUSES_MAX 10 /* Stripe's limit */

/* A field's type says which operators it takes: a token only `:` (whole value, ignoring
 * case), a string `:` (a run of whole words, ignoring case) and `~` (a substring of at least
 * three characters), a number `:`, `<`, `>`, `<=` and `>=`. */
typedef enum { TG_SEARCH_TOKEN, TG_SEARCH_STRING, TG_SEARCH_NUMBER } tg_search_type;

/* A resource's searchable field. The one named "metadata" takes a key: metadata["key"]. */
typedef struct tg_search_field {
    const char *name;
    tg_search_type type;
} tg_search_field;

/* A field's value on one object: absent (null, or an empty string), a string, or a number. */
typedef struct tg_search_value {
    bool present;
    const char *str;
    int64_t num;
} tg_search_value;

/* Fills out with field `field` (an index into the resource's table) of obj; key is the
 * metadata key for the metadata field, else NULL. */
typedef void (*tg_search_get_fn)(const void *obj, size_t field, const char *key,
                                 tg_search_value *out);

typedef enum { TG_SQ_EQ, TG_SQ_SUBSTR, TG_SQ_LT, TG_SQ_GT, TG_SQ_LE, TG_SQ_GE } tg_search_op;

typedef struct tg_search_clause {
    size_t field;
    tg_search_type type; /* the field's */
    const char *key; /* the metadata key, or NULL */
    tg_search_op op;
    bool negated;
    bool null; /* field:null, "has no value" */
    const char *text; /* the value, unquoted and unescaped (in the arena) */
    int64_t num;      /* the value of a number field */
} tg_search_clause;

typedef struct tg_search_query {
    tg_search_clause clauses[TG_SEARCH_CLAUSES_MAX];
    size_t n;
    bool any; /* joined by OR; else by AND */
} tg_search_query;

/* Parses text against the resource's fields; TG_EINVAL naming `query` with a message that
 * says what is wrong (the query's strings are copied into a). */
int tg_search_parse(const char *text, const tg_search_field *fields, size_t nfields,
                    tg_arena *a, tg_search_query *out, tg_err *err);

/* Whether obj matches q, its fields read with get. */
bool tg_search_match(const tg_search_query *q, const void *obj, tg_search_get_fn get);

#endif
