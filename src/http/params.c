/* params.c -- form and JSON decoding into parameter trees (see params.h).
 *
 * The form decoder is a pure function over (buf, len) that builds nodes in the request's
 * arena; it never reads past len and refuses rather than guesses: a bad percent escape, a
 * malformed bracket, invalid UTF-8, deeper nesting than 8, or a key used both as a value and as
 * a container is TG_EMALFORMED. JSON is read by a small purpose-built reader (below) under the
 * same rules.
 */
#include "http/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

static tg_param *new_node(tg_arena *a, tg_param_kind kind)
{
    tg_param *p = tg_arena_alloc(a, sizeof *p);
    if (p) {
        memset(p, 0, sizeof *p);
        p->kind = kind;
    }
    return p;
}

tg_param *tg_params_new(tg_arena *a)
{
    return new_node(a, TG_PARAM_HASH);
}

static void append(tg_param *parent, tg_param *child)
{
    if (parent->last)
        parent->last->next = child;
    else
        parent->first = child;
    parent->last = child;
    parent->count++;
}

static bool valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) { /* eight ASCII bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        size_t n;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false; /* truncated sequence */
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) into a new arena string; '+' becomes a space. */
static char *form_decode(const char *s, size_t len, tg_arena *a, tg_err *err)
{
    char *out = tg_arena_alloc(a, len + 1);
    if (!out) {
        tg_err_set(err, TG_ENOMEM, NULL, NULL);
        return NULL;
    }
    size_t n = 0;
    if (!memchr(s, '%', len) && !memchr(s, '+', len)) { /* most names and values: a copy */
        memcpy(out, s, len);
        n = len;
    } else {
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '%') {
                if (i + 2 >= len) {
                    tg_err_set(err, TG_EMALFORMED, NULL,
                               "Invalid request body: incomplete percent-encoding.");
                    return NULL;
                }
                int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
                if (h < 0 || l < 0) {
                    tg_err_set(err, TG_EMALFORMED, NULL,
                               "Invalid request body: bad percent-encoding '%%%c%c'.", s[i + 1],
                               s[i + 2]);
                    return NULL;
                }
                out[n++] = (char)(h * 16 + l);
                i += 2;
            } else if (s[i] == '+') {
                out[n++] = ' ';
            } else {
                out[n++] = s[i];
            }
        }
    }
    out[n] = '\0';
    if (memchr(out, '\0', n) || !valid_utf8((const unsigned char *)out, n)) {
        tg_err_set(err, TG_EMALFORMED, NULL, "Invalid request body: text must be UTF-8.");
        return NULL;
    }
    return out;
}

static tg_param *hash_child(tg_param *h, const char *key)
{
    for (tg_param *c = h->first; c; c = c->next)
        if (c->key && strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

static int conflict(tg_err *err, const char *key)
{
    return tg_err_set(err, TG_EMALFORMED, key,
                      "Invalid request: parameter '%s' is given both as a value and as a "
                      "hash or array.",
                      key);
}

static int too_many_children(tg_err *err, const char *key)
{
    return tg_err_set(err, TG_EMALFORMED, key,
                      "Invalid request: '%.64s' is in a hash or array of more than %d entries.",
                      key, TG_PARAMS_MAX_CHILDREN);
}

/* Returns the child of container `parent` selected by segment seg (kind: 0 name, 1 "[]",
 * 2 "[N]"), creating it with `want` kind when absent. */
static int descend(tg_param *parent, int seg_kind, const char *seg, long idx, tg_param_kind want,
                   bool last, tg_arena *a, tg_param **out, const char *fullkey, tg_err *err)
{
    tg_param *c = NULL;
    if (seg_kind == 0) {
        if (parent->kind != TG_PARAM_HASH)
            return conflict(err, fullkey);
        c = hash_child(parent, seg);
        if (c && last) {
            /* A repeated scalar key: the last value wins, as in Rack. */
            if (c->kind != TG_PARAM_STRING)
                return conflict(err, fullkey);
            *out = c;
            return TG_OK;
        }
        if (!c) {
            if (parent->count >= TG_PARAMS_MAX_CHILDREN)
                return too_many_children(err, fullkey);
            c = new_node(a, want);
            if (!c)
                return tg_err_set(err, TG_ENOMEM, NULL, NULL);
            c->key = tg_arena_strdup(a, seg);
            if (!c->key)
                return tg_err_set(err, TG_ENOMEM, NULL, NULL);
            append(parent, c);
        }
    } else {
        if (parent->kind != TG_PARAM_ARRAY)
            return conflict(err, fullkey);
        if (seg_kind == 2) {
            for (tg_param *e = parent->first; e; e = e->next)
                if (e->index == idx)
                    c = e;
        } else if (!last && parent->last && parent->last->kind == TG_PARAM_HASH &&
                   want == TG_PARAM_HASH) {
            /* `a[][k]=..`: keep filling the last element until k repeats (Rack's rule is
             * applied by the caller checking the key). */
            c = parent->last;
        }
        if (c && last)
            return conflict(err, fullkey);
        if (!c) {
            if (parent->count >= TG_PARAMS_MAX_CHILDREN)
                return too_many_children(err, fullkey);
            c = new_node(a, want);
            if (!c)
                return tg_err_set(err, TG_ENOMEM, NULL, NULL);
            c->index = seg_kind == 2 ? idx : (long)parent->count;
            append(parent, c);
        }
    }
    if (c->kind != want)
        return conflict(err, fullkey);
    *out = c;
    return TG_OK;
}

/* Splits key into name + bracket segments and stores value at that path. */
static int add_decoded(tg_param *root, const char *key, const char *value, tg_arena *a,
                       tg_err *err)
{
    struct {
        int kind; /* 0 name, 1 [], 2 [N] */
        char *text;
        long idx;
    } segs[TG_PARAMS_MAX_DEPTH + 2];
    size_t nsegs = 0;
    const char *p = strchr(key, '[');
    size_t namelen = p ? (size_t)(p - key) : strlen(key);
    if (namelen == 0)
        return tg_err_set(err, TG_EMALFORMED, NULL, "Invalid request: empty parameter name.");
    segs[nsegs].kind = 0;
    segs[nsegs].text = tg_arena_strndup(a, key, namelen);
    segs[nsegs++].idx = 0;
    while (p && *p) {
        if (*p != '[')
            return tg_err_set(err, TG_EMALFORMED, key, "Invalid parameter name '%s'.", key);
        const char *close = strchr(p, ']');
        if (!close)
            return tg_err_set(err, TG_EMALFORMED, key, "Invalid parameter name '%s'.", key);
        if (nsegs >= TG_PARAMS_MAX_DEPTH)
            return tg_err_set(err, TG_EMALFORMED, key,
                              "Invalid parameter name '%.64s': nested deeper than %d levels.",
                              key, TG_PARAMS_MAX_DEPTH);
        size_t n = (size_t)(close - p - 1);
        segs[nsegs].text = tg_arena_strndup(a, p + 1, n);
        segs[nsegs].idx = 0;
        if (n == 0) {
            segs[nsegs].kind = 1;
        } else if (strspn(segs[nsegs].text, "0123456789") == n && n <= 6) {
            segs[nsegs].kind = 2;
            segs[nsegs].idx = strtol(segs[nsegs].text, NULL, 10);
        } else {
            segs[nsegs].kind = 0;
        }
        nsegs++;
        p = close + 1;
    }
    for (size_t i = 0; i < nsegs; i++)
        if (!segs[i].text)
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);

    tg_param *cur = root;
    for (size_t i = 0; i < nsegs; i++) {
        bool last = i + 1 == nsegs;
        tg_param_kind want = last ? TG_PARAM_STRING
                             : segs[i + 1].kind == 0 ? TG_PARAM_HASH
                                                     : TG_PARAM_ARRAY;
        /* `a[][k]`: start a new element when the current last one already has k. */
        if (segs[i].kind == 1 && !last && want == TG_PARAM_HASH && cur->kind == TG_PARAM_ARRAY &&
            cur->last && cur->last->kind == TG_PARAM_HASH &&
            (i + 2 == nsegs && hash_child(cur->last, segs[i + 1].text))) {
            if (cur->count >= TG_PARAMS_MAX_CHILDREN)
                return too_many_children(err, key);
            tg_param *c = new_node(a, TG_PARAM_HASH);
            if (!c)
                return tg_err_set(err, TG_ENOMEM, NULL, NULL);
            c->index = (long)cur->count;
            append(cur, c);
            cur = c;
            continue;
        }
        tg_param *next = NULL;
        int rc = descend(cur, segs[i].kind, segs[i].text, segs[i].idx, want, last, a, &next, key,
                         err);
        if (rc)
            return rc;
        cur = next;
    }
    cur->value = value;
    return TG_OK;
}

/* Orders the elements of every `[N]`-indexed array by N. Insertion sort: arrays are short. */
static void sort_arrays(tg_param *p)
{
    if (p->kind == TG_PARAM_STRING)
        return;
    if (p->kind == TG_PARAM_ARRAY && p->first) {
        tg_param *sorted = NULL;
        for (tg_param *c = p->first, *next; c; c = next) {
            next = c->next;
            tg_param **link = &sorted;
            while (*link && (*link)->index <= c->index)
                link = &(*link)->next;
            c->next = *link;
            *link = c;
        }
        p->first = sorted;
        for (tg_param *c = sorted; c; c = c->next)
            p->last = c;
    }
    for (tg_param *c = p->first; c; c = c->next)
        sort_arrays(c);
}

int tg_params_add_pair(tg_param *root, const char *key, const char *value, tg_arena *a,
                       tg_err *err)
{
    size_t vlen = strlen(value);
    if (!valid_utf8((const unsigned char *)key, strlen(key)) ||
        !valid_utf8((const unsigned char *)value, vlen))
        return tg_err_set(err, TG_EMALFORMED, NULL, "Invalid request: text must be UTF-8.");
    char *k = tg_arena_strdup(a, key), *v = tg_arena_strndup(a, value, vlen);
    if (!k || !v)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    int rc = add_decoded(root, k, v, a, err);
    if (!rc)
        sort_arrays(root);
    return rc;
}

int tg_params_parse_form(tg_param *root, const char *s, size_t len, tg_arena *a, tg_err *err)
{
    size_t pos = 0, pairs = 0;
    while (pos < len) {
        const char *amp = memchr(s + pos, '&', len - pos);
        size_t end = amp ? (size_t)(amp - s) : len;
        if (end > pos) {
            if (++pairs > TG_PARAMS_MAX_PAIRS)
                return tg_err_set(err, TG_EMALFORMED, NULL,
                                  "Invalid request: more than %d parameters.", TG_PARAMS_MAX_PAIRS);
            const char *eqp = memchr(s + pos, '=', end - pos);
            size_t eq = eqp ? (size_t)(eqp - s) : end;
            char *key = form_decode(s + pos, eq - pos, a, err);
            if (!key)
                return err->code;
            char *value = eq < end ? form_decode(s + eq + 1, end - eq - 1, a, err)
                                   : tg_arena_strdup(a, "");
            if (!value)
                return err->code ? err->code : tg_err_set(err, TG_ENOMEM, NULL, NULL);
            int rc = add_decoded(root, key, value, a, err);
            if (rc)
                return rc;
        }
        pos = end + 1;
    }
    sort_arrays(root);
    return TG_OK;
}

/* ---------------------------------------------------------------- JSON */

/* A purpose-built RFC 8259 reader that builds parameter nodes straight in the request arena:
 * no intermediate document, no malloc per value (measured: the v2 stream spent more time in
 * a general-purpose library's allocations than in storing the events). Strings are unescaped
 * in place into arena copies (\uXXXX with surrogate pairs becomes UTF-8) and checked for valid
 * UTF-8 and NUL; numbers keep their exact text, and a number with a fraction or exponent is
 * refused (values that must stay exact travel as strings); duplicate keys are refused. */

typedef struct json_reader {
    const char *p, *end, *start;
    tg_arena *a;
    tg_err *err;
} json_reader;

static int json_fail(json_reader *r, const char *what)
{
    return tg_err_set(r->err, TG_EMALFORMED, NULL, "Invalid JSON body: %s at byte %zu.", what,
                      (size_t)(r->p - r->start));
}

static void json_ws(json_reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int json_hex4(json_reader *r, unsigned *out)
{
    if (r->end - r->p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
    }
    r->p += 4;
    *out = v;
    return 0;
}

static size_t utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a string (r->p at the opening quote) into a new arena copy. */
static int json_string(json_reader *r, const char **out)
{
    r->p++; /* the quote */
    const char *s = r->p;
    bool plain = true;
    unsigned char high = 0; /* the bytes' top bits: none means ASCII, valid UTF-8 */
    while (r->end - r->p >= 8 && tg_json_plain_word(r->p))
        r->p += 8;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        high |= c;
        if (c < 0x20)
            return json_fail(r, "control character in a string");
        if (c == '\\') {
            plain = false;
            if (++r->p >= r->end)
                break;
        }
        r->p++;
    }
    if (r->p >= r->end)
        return json_fail(r, "unterminated string");
    size_t raw = (size_t)(r->p - s);
    char *dst = tg_arena_alloc(r->a, raw + 1);
    if (!dst)
        return tg_err_set(r->err, TG_ENOMEM, NULL, NULL);
    size_t n = 0;
    if (plain) {
        memcpy(dst, s, raw);
        n = raw;
    } else {
        json_reader q = *r;
        q.p = s;
        while (q.p < r->p) {
            if (*q.p != '\\') {
                dst[n++] = *q.p++;
                continue;
            }
            q.p++;
            char e = *q.p++;
            unsigned cp;
            switch (e) {
            case '"': dst[n++] = '"'; break;
            case '\\': dst[n++] = '\\'; break;
            case '/': dst[n++] = '/'; break;
            case 'b': dst[n++] = '\b'; break;
            case 'f': dst[n++] = '\f'; break;
            case 'n': dst[n++] = '\n'; break;
            case 'r': dst[n++] = '\r'; break;
            case 't': dst[n++] = '\t'; break;
            case 'u':
                if (json_hex4(&q, &cp))
                    return json_fail(r, "bad \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (q.p + 1 >= r->p || q.p[0] != '\\' || q.p[1] != 'u')
                        return json_fail(r, "unpaired surrogate");
                    q.p += 2;
                    if (json_hex4(&q, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return json_fail(r, "unpaired surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return json_fail(r, "unpaired surrogate");
                }
                if (cp == 0)
                    return tg_err_set(r->err, TG_EMALFORMED, NULL,
                                      "Invalid JSON body: NUL in a string.");
                n += utf8_put(dst + n, cp); /* never longer than the 6-byte escape */
                break;
            default:
                return json_fail(r, "bad escape");
            }
        }
    }
    dst[n] = '\0';
    r->p++; /* the closing quote */
    if ((high & 0x80 || !plain) && !valid_utf8((const unsigned char *)dst, n))
        return tg_err_set(r->err, TG_EMALFORMED, NULL, "Invalid JSON body: text must be UTF-8.");
    *out = dst;
    return TG_OK;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int json_value(json_reader *r, tg_param *parent, const char *key, int depth);

/* Objects up to this many keys are checked for a duplicate key as each key is read (a scan of
 * the keys before it); larger ones once, when complete, by sorting their keys. */
#define JSON_SCAN_KEYS 16

static int key_cmp(const void *a, const void *b)
{
    return strcmp((*(tg_param *const *)a)->key, (*(tg_param *const *)b)->key);
}

static bool has_duplicate_key(tg_param *obj, tg_arena *a, bool *dup)
{
    tg_param **keys = tg_arena_alloc(a, obj->count * sizeof *keys);
    if (!keys)
        return false;
    size_t n = 0;
    for (tg_param *c = obj->first; c; c = c->next)
        keys[n++] = c;
    qsort(keys, n, sizeof *keys, key_cmp);
    *dup = false;
    for (size_t i = 1; i < n && !*dup; i++)
        *dup = strcmp(keys[i - 1]->key, keys[i]->key) == 0;
    return true;
}

static int json_container(json_reader *r, tg_param *n, int depth)
{
    bool object = n->kind == TG_PARAM_HASH;
    char close = object ? '}' : ']';
    r->p++; /* the opening bracket */
    json_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return TG_OK;
    }
    for (;;) {
        json_ws(r);
        const char *key = NULL;
        if (object) {
            if (r->p >= r->end || *r->p != '"')
                return json_fail(r, "expected a string key");
            int rc = json_string(r, &key);
            if (rc)
                return rc;
            if (n->count < JSON_SCAN_KEYS && hash_child(n, key))
                return json_fail(r, "duplicate object key");
            json_ws(r);
            if (r->p >= r->end || *r->p != ':')
                return json_fail(r, "expected ':'");
            r->p++;
        }
        int rc = json_value(r, n, key, depth + 1);
        if (rc)
            return rc;
        json_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == close) {
            r->p++;
            bool dup = false;
            if (object && n->count > JSON_SCAN_KEYS && !has_duplicate_key(n, r->a, &dup))
                return tg_err_set(r->err, TG_ENOMEM, NULL, NULL);
            return dup ? json_fail(r, "duplicate object key") : TG_OK;
        }
        return json_fail(r, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int json_value(json_reader *r, tg_param *parent, const char *key, int depth)
{
    if (depth > TG_PARAMS_MAX_DEPTH)
        return tg_err_set(r->err, TG_EMALFORMED, NULL,
                          "Invalid JSON body: nested deeper than %d levels.", TG_PARAMS_MAX_DEPTH);
    json_ws(r);
    if (r->p >= r->end)
        return json_fail(r, "expected a value");
    char c = *r->p;
    tg_param *n = new_node(r->a, c == '{' ? TG_PARAM_HASH : c == '[' ? TG_PARAM_ARRAY
                                                                      : TG_PARAM_STRING);
    if (!n)
        return tg_err_set(r->err, TG_ENOMEM, NULL, NULL);
    n->key = key;
    n->index = (long)parent->count;
    int rc = TG_OK;
    if (c == '{' || c == '[') {
        rc = json_container(r, n, depth);
    } else if (c == '"') {
        rc = json_string(r, &n->value);
    } else if (c == '-' || is_digit(c)) {
        const char *s = r->p;
        if (*r->p == '-')
            r->p++;
        if (r->p >= r->end || !is_digit(*r->p))
            return json_fail(r, "bad number");
        if (*r->p == '0')
            r->p++;
        else
            while (r->p < r->end && is_digit(*r->p))
                r->p++;
        if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
            return tg_err_set(r->err, TG_EINVAL, key,
                              "Invalid %s: numbers with a fraction must be sent as strings to "
                              "stay exact.",
                              key ? key : "value");
        n->value = tg_arena_strndup(r->a, s, (size_t)(r->p - s));
        n->is_json_scalar = true;
        if (!n->value)
            return tg_err_set(r->err, TG_ENOMEM, NULL, NULL);
    } else if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
        r->p += 4, n->value = "true", n->is_json_scalar = true;
    } else if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
        r->p += 5, n->value = "false", n->is_json_scalar = true;
    } else if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
        r->p += 4, n->value = NULL;
    } else {
        return json_fail(r, "unexpected character");
    }
    if (rc)
        return rc;
    append(parent, n);
    return TG_OK;
}

int tg_params_parse_json(tg_param *root, const char *s, size_t len, tg_arena *a, tg_err *err)
{
    json_reader r = {s, s + len, s, a, err};
    json_ws(&r);
    if (r.p >= r.end || *r.p != '{')
        return json_fail(&r, "expected an object");
    int rc = json_container(&r, root, 0);
    if (rc)
        return rc;
    json_ws(&r);
    if (r.p != r.end)
        return json_fail(&r, "trailing characters");
    return TG_OK;
}

/* ---------------------------------------------------------------- access */

void tg_param_move(tg_param *to, tg_param *p)
{
    p->next = NULL;
    p->used = false;
    append(to, p);
}

tg_param *tg_param_get(tg_param *h, const char *key)
{
    if (!h || h->kind != TG_PARAM_HASH)
        return NULL;
    tg_param *c = hash_child(h, key);
    if (c)
        c->used = true;
    return c;
}

void tg_param_use_all(tg_param *p)
{
    p->used = true;
    for (tg_param *c = p->first; c; c = c->next)
        tg_param_use_all(c);
}

static bool any_unused(const tg_param *p)
{
    for (const tg_param *c = p->first; c; c = c->next)
        if (!c->used || (c->kind != TG_PARAM_STRING && any_unused(c)))
            return true;
    return false;
}

/* Writes the path to the first unused node below p after path[0..len). The path is formatted
 * only along the branch that holds it: every request runs this, and most have nothing unused
 * (formatting each node's segment cost 7% of a 100-event stream request's time). */
static bool find_unused(const tg_param *p, char *path, size_t pathsz, size_t len)
{
    for (const tg_param *c = p->first; c; c = c->next) {
        if (c->used && (c->kind == TG_PARAM_STRING || !any_unused(c)))
            continue;
        int n = c->key ? (len ? snprintf(path + len, pathsz - len, "[%s]", c->key)
                              : snprintf(path + len, pathsz - len, "%s", c->key))
                       : snprintf(path + len, pathsz - len, "[%ld]", c->index);
        size_t l2 = len + (n > 0 ? (size_t)n : 0);
        if (l2 >= pathsz)
            l2 = pathsz - 1;
        return !c->used || find_unused(c, path, pathsz, l2);
    }
    return false;
}

bool tg_params_first_unused(const tg_param *root, char *path, size_t pathsz)
{
    path[0] = '\0';
    return find_unused(root, path, pathsz, 0);
}
