/* eventblock.c -- encoding and decoding of event blocks (see eventblock.h). The decoder
 * checks every length against the end of the block, so a corrupt block is reported, never
 * read past. */
#include "core/eventblock.h"

#include <string.h>

#include "core/varint.h"

static int get_varint(tg_block_reader *r, unsigned __int128 *out)
{
    return tg_varint_get(&r->p, r->end, out);
}

static int get_u64(tg_block_reader *r, uint64_t *out)
{
    unsigned __int128 v;
    if (get_varint(r, &v) || v > UINT64_MAX)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int get_bytes(tg_block_reader *r, const unsigned char **p, size_t *len)
{
    uint64_t n;
    if (get_u64(r, &n) || n > (uint64_t)(r->end - r->p))
        return -1;
    *p = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

void tg_block_init(tg_block *b, size_t cap)
{
    tg_buf_init(&b->body, cap);
    b->count = 0;
    b->base_ts = 0;
}

void tg_block_free(tg_block *b)
{
    tg_buf_free(&b->body);
}

static void put_string(tg_buf *b, const char *s, size_t n)
{
    tg_varint_put(b, n);
    tg_buf_append(b, s, n);
}

int tg_block_add(tg_block *b, const char *identifier, uint64_t meter_seq, uint64_t customer_seq,
                 int64_t timestamp, tg_dec value, const tg_metadata *extras)
{
    if (b->count == 0)
        b->base_ts = timestamp;
    size_t mark = b->body.len;
    put_string(&b->body, identifier, strlen(identifier));
    tg_varint_put(&b->body, meter_seq);
    tg_varint_put(&b->body, customer_seq);
    tg_varint_put(&b->body, tg_zigzag((__int128)timestamp - b->base_ts));
    tg_dec_put_compact(&b->body, value);
    size_t n = extras ? extras->n : 0;
    tg_varint_put(&b->body, n);
    for (size_t i = 0; i < n; i++) {
        const char *v = extras->items[i].value ? extras->items[i].value : "";
        put_string(&b->body, extras->items[i].key, strlen(extras->items[i].key));
        put_string(&b->body, v, strlen(v));
    }
    if (b->body.failed) {
        b->body.failed = false;
        b->body.len = mark;
        return -1;
    }
    b->count++;
    return 0;
}

int tg_block_finish_part(const tg_block *b, size_t count, size_t from, size_t to, tg_buf *out)
{
    unsigned char version = 1;
    tg_buf_append(out, &version, 1);
    tg_varint_put(out, count);
    tg_varint_put(out, tg_zigzag(b->base_ts));
    tg_buf_append(out, b->body.data ? (const char *)b->body.data + from : "", to - from);
    return out->failed ? -1 : 0;
}

int tg_block_finish(const tg_block *b, tg_buf *out)
{
    return tg_block_finish_part(b, b->count, 0, b->body.len, out);
}

int tg_block_open(tg_block_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    unsigned __int128 v;
    uint64_t count;
    if (len < 1 || *r->p++ != 1 || get_u64(r, &count) || get_varint(r, &v))
        return -1;
    r->remaining = (size_t)count;
    r->base_ts = (int64_t)tg_unzigzag(v);
    return 0;
}

int tg_block_next(tg_block_reader *r, tg_block_event *e)
{
    if (r->remaining == 0)
        return r->p == r->end ? 0 : -1;
    const unsigned char *id;
    unsigned __int128 v;
    if (get_bytes(r, &id, &e->identifier_len) || get_u64(r, &e->meter_seq) ||
        get_u64(r, &e->customer_seq) || get_varint(r, &v))
        return -1;
    e->identifier = (const char *)id;
    __int128 ts = (__int128)r->base_ts + tg_unzigzag(v);
    if (ts < INT64_MIN || ts > INT64_MAX)
        return -1;
    e->timestamp = (int64_t)ts;
    if (tg_dec_get_compact(&r->p, r->end, &e->value))
        return -1;
    uint64_t n;
    if (get_u64(r, &n))
        return -1;
    e->nextra = (size_t)n;
    e->extra = r->p;
    e->extra_end = r->end;
    for (uint64_t i = 0; i < 2 * n; i++) {
        const unsigned char *s;
        size_t l;
        if (get_bytes(r, &s, &l))
            return -1;
    }
    r->remaining--;
    return 1;
}

int tg_block_extra(const tg_block_event *e, size_t i, const char **key, size_t *klen,
                   const char **value, size_t *vlen)
{
    tg_block_reader r = {e->extra, e->extra_end, 0, 0};
    const unsigned char *k = NULL, *v = NULL;
    for (size_t j = 0; j <= i; j++)
        if (get_bytes(&r, &k, klen) || get_bytes(&r, &v, vlen))
            return -1;
    *key = (const char *)k;
    *value = (const char *)v;
    return i < e->nextra ? 0 : -1;
}
