/* params.h -- request parameters as a tree, whatever the wire encoding.
 *
 * Stripe's /v1 sends application/x-www-form-urlencoded bodies (and query strings) with
 * bracketed keys: `payload[value]=3`, `expand[]=a`, `items[0][price]=p`. /v2 sends JSON. Both
 * decode into the same tree of hashes, arrays and strings, so handlers read parameters one way.
 * Form rules: keys and values are percent-decoded ('+' is a space); `[]` appends to an array,
 * `[N]` addresses element N of an array (elements are ordered by N), any other `[k]` a hash
 * key; an empty value is a string of length 0, which Stripe reads as "unset". JSON null also
 * decodes to an unset (NULL) string. Text must be valid UTF-8. Nesting is limited to 8 levels.
 *
 * Every node has a `used` flag: getters set it, and tg_params_first_unused() finds what no
 * handler asked for, so unknown parameters are refused before anything is written.
 */
#ifndef TG_HTTP_PARAMS_H
#define TG_HTTP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/arena.h"
#include "base/err.h"

#define TG_PARAMS_MAX_DEPTH 8
#define TG_PARAMS_MAX_PAIRS 20000
/* Entries of one hash or array in a form body (Stripe's metadata takes 50 keys): finding an
 * entry scans its siblings, so this bounds a form's decoding at MAX_PAIRS x MAX_CHILDREN. */
#define TG_PARAMS_MAX_CHILDREN 256

typedef enum { TG_PARAM_STRING, TG_PARAM_HASH, TG_PARAM_ARRAY } tg_param_kind;

typedef struct tg_param tg_param;
struct tg_param {
    tg_param_kind kind;
    const char *key;   /* name within its parent hash; NULL inside arrays */
    long index;        /* position given by `[N]`, or append order */
    const char *value; /* STRING: NUL-terminated; NULL for JSON null */
    bool is_json_scalar; /* a JSON number or boolean (not a string) */
    tg_param *first, *last, *next;
    size_t count;
    bool used;
};

/* Returns a new empty hash (the root of a request's parameters). */
tg_param *tg_params_new(tg_arena *a);

/* Adds the pairs of a form-encoded string s[0..len) to root. Returns TG_OK or TG_EMALFORMED /
 * TG_ENOMEM with detail in err. */
int tg_params_parse_form(tg_param *root, const char *s, size_t len, tg_arena *a, tg_err *err);

/* Adds one already-decoded pair (a query argument decoded by the HTTP library). */
int tg_params_add_pair(tg_param *root, const char *key, const char *value, tg_arena *a,
                       tg_err *err);

/* The eight bytes at p with the top bit set in each that is not plain ASCII -- a quote, a
 * backslash, a control character or a byte past 0x7F (the bit tricks of "Bit Twiddling
 * Hacks": a zero byte of w ^ quote, of w ^ backslash, or a byte of w below 0x20 sets its top
 * bit, as a byte past 0x7F has it). Exact up to the first byte marked; bytes past it may be
 * marked too, which only sends a caller to look closer. */
static inline uint64_t tg_json_special_bytes(const char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t w, q, b;
    memcpy(&w, p, 8);
    q = w ^ (ones * '"');
    b = w ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & highs;
}

/* True when the eight bytes at p are all plain (see tg_json_special_bytes). */
static inline bool tg_json_plain_word(const char *p)
{
    return !tg_json_special_bytes(p);
}

/* Adds the members of a JSON object text s[0..len) to root. */
int tg_params_parse_json(tg_param *root, const char *s, size_t len, tg_arena *a, tg_err *err);

/* Returns the child of hash h named key (marking it used), or NULL. h may be NULL. */
tg_param *tg_param_get(tg_param *h, const char *key);

/* Makes p (taken from another tree, which must not be read again) the last child of the
 * hash `to`. */
void tg_param_move(tg_param *to, tg_param *p);

/* Marks p and everything below it used. */
void tg_param_use_all(tg_param *p);

/* Writes the bracketed path of the first node nobody used into path (size pathsz). Returns
 * true when there is one. */
bool tg_params_first_unused(const tg_param *root, char *path, size_t pathsz);

#endif
