/* search_query.c -- Stripe's search query language (GET /v1/<resource>/search).
 *
 * A query is up to ten clauses, `field:value`, joined by spaces or AND (all must match) or by
 * OR (any may), never both; a clause led by `-` matches what it would not. A value is quoted
 * ('…' or "…", a backslash escaping the next character); a number may go bare, and so may
 * `null`, which matches an absent field (`-field:null`: a present one). metadata takes a key,
 * metadata["key"], and a token's value. What each operator means depends on the field's type
 * (search_query.h): `:` on a token compares the whole value ignoring ASCII case, `:` on a
 * string looks for the query's words as a run of whole words of the value (name:"one two"
 * matches "One two three", not "one twothree"), `~` for a substring of at least three
 * characters, and the comparisons for numbers. This is Stripe's published language; the
 * parser refuses, with a message saying what and where, anything else: unknown fields, an
 * operator the field's type does not take, a bare string, a number that is not an integer,
 * an unterminated quote, AND mixed with OR, an eleventh clause.
 *
 * Parsing copies the values into the request's arena and puts a string's words one space
 * apart, so matching is a walk over each value with no allocation; matching one object costs
 * what its clauses read.
 */
#include "core/search_query.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *skip_spaces(const char *p)
{
    while (is_space(*p))
        p++;
    return p;
}

static int refuse(tg_err *err, const char *text, const char *at, const char *what)
{
    return tg_err_set(err, TG_EINVAL, "query", "Invalid query at character %d: %s",
                      (int)(at - text) + 1, what);
}

/* Reads a quoted value at p (its quote is *p) into the arena, unescaped; NULL when the quote
 * is not closed (*end is where reading stopped, *nomem false) or memory ran out (*nomem). */
static char *read_quoted(const char *p, tg_arena *a, const char **end, bool *nomem)
{
    *nomem = false;
    char quote = *p++;
    size_t len = 0;
    const char *s = p;
    while (*s && *s != quote) {
        if (*s == '\\' && s[1])
            s++;
        s++;
        len++;
    }
    *end = s;
    if (*s != quote)
        return NULL;
    char *out = tg_arena_alloc(a, len + 1);
    if (!out) {
        *nomem = true;
        return NULL;
    }
    for (size_t i = 0; p < s; p++) {
        if (*p == '\\' && p + 1 < s)
            p++;
        out[i++] = *p;
    }
    out[len] = '\0';
    *end = s + 1;
    return out;
}

/* The words of s one space apart, in the arena ("" when it has none; NULL out of memory). */
static char *words_of(const char *s, tg_arena *a)
{
    char *out = tg_arena_alloc(a, strlen(s) + 1), *o = out;
    if (!out)
        return NULL;
    for (s = skip_spaces(s); *s; s = skip_spaces(s)) {
        if (o != out)
            *o++ = ' ';
        while (*s && !is_space(*s))
            *o++ = *s++;
    }
    *o = '\0';
    return out;
}

static bool parse_int(const char *s, int64_t *out)
{
    if (!*s || is_space(*s))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Reads the operator at *p; false when there is none. */
static bool read_op(const char **p, tg_search_op *op)
{
    const char *s = *p;
    if (*s == ':')
        *op = TG_SQ_EQ;
    else if (*s == '~')
        *op = TG_SQ_SUBSTR;
    else if (*s == '<')
        *op = s[1] == '=' ? TG_SQ_LE : TG_SQ_LT;
    else if (*s == '>')
        *op = s[1] == '=' ? TG_SQ_GE : TG_SQ_GT;
    else
        return false;
    *p = s + (*op == TG_SQ_LE || *op == TG_SQ_GE ? 2 : 1);
    return true;
}

typedef struct parser {
    const char *text;
    const tg_search_field *fields;
    size_t nfields;
    tg_arena *a;
    tg_err *err;
} parser;

/* Parses one clause at *p into c. */
static int parse_clause(parser *ps, const char **p, tg_search_clause *c)
{
    const char *s = *p, *start;
    char what[160];
    memset(c, 0, sizeof *c);
    if (*s == '-') {
        c->negated = true;
        s++;
    }
    start = s;
    while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
           *s == '_' || *s == '.')
        s++;
    if (s == start)
        return refuse(ps->err, ps->text, s, "expected a field name.");
    size_t len = (size_t)(s - start);
    for (c->field = 0; c->field < ps->nfields; c->field++)
        if (strlen(ps->fields[c->field].name) == len &&
            memcmp(ps->fields[c->field].name, start, len) == 0)
            break;
    if (c->field == ps->nfields) {
        snprintf(what, sizeof what, "'%.*s' is not a field that can be searched here.",
                 (int)(len > 64 ? 64 : len), start);
        return refuse(ps->err, ps->text, start, what);
    }
    const tg_search_field *f = &ps->fields[c->field];
    c->type = f->type;
    bool metadata = strcmp(f->name, "metadata") == 0;
    if (metadata != (*s == '['))
        return refuse(ps->err, ps->text, s,
                      metadata ? "metadata takes a key: metadata[\"key\"]."
                               : "only metadata takes a key in brackets.");
    bool nomem = false;
    if (metadata) {
        const char *end;
        if ((s[1] != '"' && s[1] != '\'') || !(c->key = read_quoted(s + 1, ps->a, &end, &nomem)) ||
            *end != ']' || !*c->key)
            return nomem ? tg_err_set(ps->err, TG_ENOMEM, NULL, NULL)
                         : refuse(ps->err, ps->text, s,
                                  "metadata takes a quoted key: metadata[\"key\"].");
        s = end + 1;
    }
    const char *at_op = s;
    if (!read_op(&s, &c->op))
        return refuse(ps->err, ps->text, at_op,
                      "expected an operator (:, ~, <, >, <= or >=) after the field.");
    const char *at_value = s;
    bool quoted = *s == '"' || *s == '\'';
    const char *value;
    if (quoted) {
        const char *end;
        if (!(value = read_quoted(s, ps->a, &end, &nomem)))
            return nomem ? tg_err_set(ps->err, TG_ENOMEM, NULL, NULL)
                         : refuse(ps->err, ps->text, at_value, "the quoted value is not closed.");
        s = end;
    } else {
        const char *b = s;
        while (*s && !is_space(*s))
            s++;
        char *v = tg_arena_alloc(ps->a, (size_t)(s - b) + 1);
        if (!v)
            return tg_err_set(ps->err, TG_ENOMEM, NULL, NULL);
        memcpy(v, b, (size_t)(s - b));
        v[s - b] = '\0';
        value = v;
        if (!*value)
            return refuse(ps->err, ps->text, at_value, "expected a value after the operator.");
    }
    if (*s && !is_space(*s))
        return refuse(ps->err, ps->text, s, "expected a space after the value.");
    *p = s;
    if (!quoted && strcasecmp(value, "null") == 0) {
        if (c->op != TG_SQ_EQ)
            return refuse(ps->err, ps->text, at_op, "null takes only ':'.");
        c->null = true;
        return TG_OK;
    }
    switch (f->type) {
    case TG_SEARCH_NUMBER:
        if (c->op == TG_SQ_SUBSTR)
            return refuse(ps->err, ps->text, at_op, "a number takes :, <, >, <= or >=, not ~.");
        if (!parse_int(value, &c->num))
            return refuse(ps->err, ps->text, at_value, "the value must be an integer.");
        return TG_OK;
    case TG_SEARCH_TOKEN:
        if (c->op != TG_SQ_EQ)
            return refuse(ps->err, ps->text, at_op, "this field takes only ':'.");
        break;
    case TG_SEARCH_STRING:
        if (c->op != TG_SQ_EQ && c->op != TG_SQ_SUBSTR)
            return refuse(ps->err, ps->text, at_op, "a string takes ':' or '~'.");
        break;
    }
    if (!quoted)
        return refuse(ps->err, ps->text, at_value, "a string value must be quoted.");
    if (c->op == TG_SQ_SUBSTR) {
        if (strlen(value) < 3)
            return refuse(ps->err, ps->text, at_value,
                          "a substring (~) must be at least 3 characters.");
        c->text = value;
    } else if (f->type == TG_SEARCH_STRING) {
        if (!(c->text = words_of(value, ps->a)))
            return tg_err_set(ps->err, TG_ENOMEM, NULL, NULL);
    } else {
        c->text = value;
    }
    if (!*c->text)
        return refuse(ps->err, ps->text, at_value, "the value is empty.");
    return TG_OK;
}

/* The length of the AND or OR at p (followed by a space or the end), or 0. */
static size_t joiner_at(const char *p, bool *is_or)
{
    if (strncasecmp(p, "AND", 3) == 0 && (is_space(p[3]) || !p[3])) {
        *is_or = false;
        return 3;
    }
    if (strncasecmp(p, "OR", 2) == 0 && (is_space(p[2]) || !p[2])) {
        *is_or = true;
        return 2;
    }
    return 0;
}

int tg_search_parse(const char *text, const tg_search_field *fields, size_t nfields,
                    tg_arena *a, tg_search_query *out, tg_err *err)
{
    parser ps = {text, fields, nfields, a, err};
    memset(out, 0, sizeof *out);
    const char *p = skip_spaces(text);
    if (!*p)
        return refuse(err, text, p, "the query is empty.");
    int joined = 0; /* 0: one clause so far; 1: AND (or a space); 2: OR */
    for (;;) {
        if (out->n == TG_SEARCH_CLAUSES_MAX)
            return refuse(err, text, p, "a query has at most 10 clauses.");
        int rc = parse_clause(&ps, &p, &out->clauses[out->n++]);
        if (rc)
            return rc;
        p = skip_spaces(p);
        if (!*p)
            break;
        bool is_or = false;
        size_t n = joiner_at(p, &is_or);
        const char *at = p;
        if (n) {
            p = skip_spaces(p + n);
            if (!*p)
                return refuse(err, text, at, "the query ends with AND or OR.");
        }
        int kind = is_or ? 2 : 1;
        if (joined && joined != kind)
            return refuse(err, text, at, "AND and OR cannot be combined in one query.");
        joined = kind;
    }
    out->any = joined == 2;
    return TG_OK;
}

/* Whether words (one space apart) are a run of whole words of s, ignoring ASCII case. */
static bool has_words(const char *s, const char *words)
{
    for (s = skip_spaces(s); *s;) {
        const char *h = s, *w = words;
        for (;;) {
            size_t hl = 0, wl = 0;
            while (h[hl] && !is_space(h[hl]))
                hl++;
            while (w[wl] && w[wl] != ' ')
                wl++;
            if (hl != wl || strncasecmp(h, w, wl) != 0)
                break;
            if (!w[wl])
                return true;
            w += wl + 1;
            h = skip_spaces(h + hl);
            if (!*h)
                return false;
        }
        while (*s && !is_space(*s))
            s++;
        s = skip_spaces(s);
    }
    return false;
}

static bool clause_matches(const tg_search_clause *c, const tg_search_value *v)
{
    if (c->null)
        return !v->present;
    if (!v->present)
        return false;
    switch (c->op) {
    case TG_SQ_LT: return v->num < c->num;
    case TG_SQ_GT: return v->num > c->num;
    case TG_SQ_LE: return v->num <= c->num;
    case TG_SQ_GE: return v->num >= c->num;
    case TG_SQ_SUBSTR: return strcasestr(v->str, c->text) != NULL;
    case TG_SQ_EQ: break;
    }
    switch (c->type) {
    case TG_SEARCH_NUMBER: return v->num == c->num;
    case TG_SEARCH_TOKEN: return strcasecmp(v->str, c->text) == 0;
    case TG_SEARCH_STRING: break;
    }
    return has_words(v->str, c->text);
}

bool tg_search_match(const tg_search_query *q, const void *obj, tg_search_get_fn get)
{
    for (size_t i = 0; i < q->n; i++) {
        const tg_search_clause *c = &q->clauses[i];
        tg_search_value v = {0};
        get(obj, c->field, c->key, &v);
        bool m = clause_matches(c, &v) != c->negated;
        if (m == q->any) /* the first match of an OR, the first miss of an AND */
            return m;
    }
    return !q->any || q->n == 0;
}
