/* stream_json.c -- the meter event stream's body, decoded straight into events.
 *
 * The general decoder (params.c) builds a tree of the body, a node and a copy per key and
 * string, checks each object's keys for duplicates, and the handler then looks every field
 * up by name: measured with callgrind, 5,200 of the 10,000 instructions a streamed event cost
 * the whole server. This path reads the body once, left to right, and writes each field
 * where the event keeps it. It takes the shape every client sends,
 *
 *     {"events":[{"event_name":"..","identifier":"..","timestamp":"..",
 *                 "payload":{"k":"v",..}}, ..]}
 *
 * (any order of keys, identifier and timestamp optional, any JSON whitespace), with strings
 * that are printable ASCII without escapes. Anything else -- another key, a duplicate, a
 * number, null, an escape, a byte past 0x7F, a field the general way would refuse (an empty
 * event_name, a name too long, a bad timestamp), too many events -- declines, and the caller
 * decodes the body the general way, which accepts the same events or answers the error. A
 * decline costs the work done so far, once, on a body that is unusual or wrong.
 *
 * Strings are not copied. A string's closing quote is overwritten with NUL as it is read, so
 * payload keys and values point into the body; names are copied into the event's arrays. On
 * a decline the quotes are put back: every NUL before the point of the decline is one of
 * ours, since the reader checks every byte it passes (whitespace, structure, plain string
 * bytes) and a NUL is none of them.
 */
#include "http/stream_json.h"

#include <stdint.h>
#include <string.h>

#include "core/calendar.h"
#include "http/params.h"

#define PAYLOAD_KEYS_MAX 32 /* more keys decline: the general way takes them */
#define TIMESTAMP_MAX 64    /* as the general way's limit on the timestamp string */

typedef struct reader {
    char *p, *end;
} reader;

typedef struct span {
    char *s;
    size_t n;
} span;

static void ws(reader *r)
{
    /* Bodies from clients mostly have none: one comparison settles that (every byte a
     * whitespace test looks for is below '!'). */
    while (r->p < r->end && (unsigned char)*r->p <= ' ' &&
           (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

/* Consumes ch and the whitespace after it. */
static bool expect(reader *r, char ch)
{
    if (r->p >= r->end || *r->p != ch)
        return false;
    r->p++;
    ws(r);
    return true;
}

/* A string of printable ASCII without escapes at r->p; its closing quote becomes its NUL. */
static bool plain_string(reader *r, span *out)
{
    if (r->p >= r->end || *r->p != '"')
        return false;
    char *s = ++r->p;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* eight bytes at a time; the first byte marked is the lowest (the first in memory) */
    while (r->end - r->p >= 8) {
        uint64_t special = tg_json_special_bytes(r->p);
        if (special) {
            r->p += __builtin_ctzll(special) / 8;
            break;
        }
        r->p += 8;
    }
#endif
    for (;; r->p++) {
        if (r->p >= r->end)
            return false;
        unsigned char c = (unsigned char)*r->p;
        if (c == '"')
            break;
        if (c < 0x20 || c >= 0x80 || c == '\\')
            return false;
    }
    out->s = s;
    out->n = (size_t)(r->p - s);
    *r->p++ = '\0';
    ws(r);
    return true;
}

static bool is(const span *k, const char *name, size_t len)
{
    return k->n == len && memcmp(k->s, name, len) == 0;
}

/* After a member: a comma (true, *more) or the object's close (true, !*more). */
static bool next_member(reader *r, char close, bool *more)
{
    if (r->p < r->end && *r->p == ',') {
        *more = true;
        return expect(r, ',');
    }
    *more = false;
    return expect(r, close);
}

/* {"k":"v",..}: string values only, no key twice, in the order given. */
static bool payload(reader *r, tg_arena *a, tg_metadata *out)
{
    span keys[PAYLOAD_KEYS_MAX], values[PAYLOAD_KEYS_MAX];
    size_t n = 0;
    if (!expect(r, '{'))
        return false;
    bool more = r->p < r->end && *r->p != '}';
    if (!more)
        r->p++, ws(r);
    while (more) {
        span k, v;
        if (n == PAYLOAD_KEYS_MAX || !plain_string(r, &k) || !expect(r, ':') ||
            !plain_string(r, &v))
            return false;
        for (size_t i = 0; i < n; i++)
            if (keys[i].n == k.n && memcmp(keys[i].s, k.s, k.n) == 0)
                return false;
        keys[n] = k, values[n] = v, n++;
        if (!next_member(r, '}', &more))
            return false;
    }
    out->items = tg_arena_alloc(a, (n ? n : 1) * sizeof *out->items);
    if (!out->items)
        return false;
    for (size_t i = 0; i < n; i++)
        out->items[i] = (tg_kv){keys[i].s, values[i].s};
    out->n = n;
    return true;
}

/* Copies a string read by plain_string and its NUL. The NUL is written separately, not
 * copied: the copy's last word would overlap the NUL plain_string has just stored, and a load
 * overlapping a recent narrower store cannot be forwarded and waits for the store buffer to
 * drain (perf: 65% of this file's cycles were that one load, 5% of the server's). */
static void copy_name(char *dst, const span *v)
{
    memcpy(dst, v->s, v->n);
    dst[v->n] = '\0';
}

/* One event object, read as the stream handler's general path reads it (routes.c). */
static bool event(reader *r, tg_arena *a, tg_event *e)
{
    memset(e, 0, sizeof *e);
    e->timestamp = TG_TIME_NOW;
    bool name = false, identifier = false, timestamp = false, pay = false, more = true;
    if (!expect(r, '{'))
        return false;
    while (more) {
        span k, v;
        if (!plain_string(r, &k) || !expect(r, ':'))
            return false;
        if (is(&k, "payload", 7)) {
            if (pay || !payload(r, a, &e->payload))
                return false;
            pay = true;
        } else if (!plain_string(r, &v)) {
            return false;
        } else if (is(&k, "event_name", 10)) {
            if (name || v.n == 0 || v.n > TG_NAME_MAX)
                return false;
            copy_name(e->event_name, &v);
            name = true;
        } else if (is(&k, "identifier", 10)) {
            if (identifier || v.n > TG_NAME_MAX)
                return false;
            copy_name(e->identifier, &v); /* "" is no identifier, as absent */
            identifier = true;
        } else if (is(&k, "timestamp", 9)) {
            if (timestamp || v.n > TIMESTAMP_MAX || (v.n && !tg_parse_iso_time(v.s, &e->timestamp)))
                return false;
            timestamp = true;
        } else {
            return false;
        }
        if (!next_member(r, '}', &more))
            return false;
    }
    return name && pay;
}

/* An upper bound on the events in body: each takes two '{' (its own and its payload's) and
 * the body one more. Tight for the bodies this path takes, so the array wastes little. */
static size_t events_bound(const char *body, size_t len)
{
    size_t braces = 0;
    for (const char *p = body, *end = body + len; (p = memchr(p, '{', (size_t)(end - p))); p++)
        braces++;
    return braces ? (braces - 1) / 2 : 0;
}

bool tg_stream_json_decode(char *body, size_t len, size_t max_events, tg_arena *a,
                           tg_event **evs, size_t *n)
{
    reader r = {body, body + len};
    size_t cap = events_bound(body, len), i = 0;
    if (cap > max_events)
        cap = max_events;
    tg_event *out = cap ? tg_arena_alloc(a, cap * sizeof *out) : NULL;
    span k;
    bool more = true;
    ws(&r);
    if (!out || !expect(&r, '{') || !plain_string(&r, &k) || !is(&k, "events", 6) ||
        !expect(&r, ':') || !expect(&r, '['))
        goto decline;
    while (more) {
        if (i == cap || !event(&r, a, &out[i++]) || !next_member(&r, ']', &more))
            goto decline;
    }
    if (!expect(&r, '}') || r.p != r.end)
        goto decline;
    *evs = out;
    *n = i;
    return true;

decline:
    for (char *q = body; q < r.p; q++)
        if (!*q)
            *q = '"';
    return false;
}
