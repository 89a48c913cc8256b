/* params.c -- form and JSON decoding into parameter trees (see params.h).
 *
 * The form decoder is a pure function over (buf, len) that builds nodes in the request's
 * arena; it never reads past len and refuses rather than guesses: a bad percent escape, a
 * malformed bracket, invalid UTF-8, deeper nesting than 8, or a key used both as a value and as
 * a container is TG_EMALFORMED. JSON is read with jansson (depth-limited by the same rule)
 * and converted node by node.
 */
#include "http/params.h"

#include <jansson.h>
#include <stdio.h>
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
        size_t end = pos;
        while (end < len && s[end] != '&')
            end++;
        if (end > pos) {
            if (++pairs > TG_PARAMS_MAX_PAIRS)
                return tg_err_set(err, TG_EMALFORMED, NULL,
                                  "Invalid request: more than %d parameters.", TG_PARAMS_MAX_PAIRS);
            size_t eq = pos;
            while (eq < end && s[eq] != '=')
                eq++;
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

static int from_json(tg_param *parent, const char *key, json_t *v, int depth, tg_arena *a,
                     tg_err *err)
{
    if (depth > TG_PARAMS_MAX_DEPTH)
        return tg_err_set(err, TG_EMALFORMED, NULL,
                          "Invalid JSON body: nested deeper than %d levels.", TG_PARAMS_MAX_DEPTH);
    tg_param *n;
    char num[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        n = new_node(a, TG_PARAM_HASH);
        break;
    case JSON_ARRAY:
        n = new_node(a, TG_PARAM_ARRAY);
        break;
    default:
        n = new_node(a, TG_PARAM_STRING);
        break;
    }
    if (!n)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    if (key && !(n->key = tg_arena_strdup(a, key)))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    n->index = (long)parent->count;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *child;
        json_object_foreach(v, k, child)
        {
            int rc = from_json(n, k, child, depth + 1, a, err);
            if (rc)
                return rc;
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            int rc = from_json(n, NULL, child, depth + 1, a, err);
            if (rc)
                return rc;
        }
        break;
    }
    case JSON_STRING:
        n->value = tg_arena_strndup(a, json_string_value(v), json_string_length(v));
        if (!n->value)
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
        if (memchr(n->value, '\0', json_string_length(v)))
            return tg_err_set(err, TG_EMALFORMED, key, "Invalid JSON body: NUL in a string.");
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        n->value = tg_arena_strdup(a, num);
        n->is_json_scalar = true;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        n->value = json_is_true(v) ? "true" : "false";
        n->is_json_scalar = true;
        break;
    case JSON_REAL:
        return tg_err_set(err, TG_EINVAL, key ? key : NULL,
                          "Invalid %s: numbers with a fraction must be sent as strings to stay "
                          "exact.",
                          key ? key : "value");
    case JSON_NULL:
        n->value = NULL;
        break;
    }
    append(parent, n);
    return TG_OK;
}

int tg_params_parse_json(tg_param *root, const char *s, size_t len, tg_arena *a, tg_err *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return tg_err_set(err, TG_EMALFORMED, NULL, "Invalid JSON body: %s (line %d, column %d).",
                          jerr.text, jerr.line, jerr.column);
    int rc = TG_OK;
    if (!json_is_object(doc)) {
        rc = tg_err_set(err, TG_EMALFORMED, NULL, "Invalid JSON body: expected an object.");
    } else {
        const char *k;
        json_t *child;
        json_object_foreach(doc, k, child)
        {
            rc = from_json(root, k, child, 1, a, err);
            if (rc)
                break;
        }
    }
    json_decref(doc);
    return rc;
}

/* ---------------------------------------------------------------- access */

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

static bool find_unused(const tg_param *p, char *path, size_t pathsz, size_t len)
{
    for (const tg_param *c = p->first; c; c = c->next) {
        int n = c->key ? (len ? snprintf(path + len, pathsz - len, "[%s]", c->key)
                              : snprintf(path + len, pathsz - len, "%s", c->key))
                       : snprintf(path + len, pathsz - len, "[%ld]", c->index);
        size_t l2 = len + (n > 0 ? (size_t)n : 0);
        if (l2 >= pathsz)
            l2 = pathsz - 1;
        if (!c->used)
            return true;
        if (c->kind != TG_PARAM_STRING && find_unused(c, path, pathsz, l2))
            return true;
        path[len] = '\0';
    }
    return false;
}

bool tg_params_first_unused(const tg_param *root, char *path, size_t pathsz)
{
    path[0] = '\0';
    return find_unused(root, path, pathsz, 0);
}
