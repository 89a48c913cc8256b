/* record.c -- tagged-field records (see record.h). Every read is bounds-checked against the
 * record's end; a corrupt record is reported, never read past. */
#include "core/record.h"

#include <string.h>

#include "core/varint.h"

static void put_key(tg_buf *b, unsigned tag, int kind)
{
    tg_varint_put(b, ((unsigned __int128)tag << 2) | (unsigned)kind);
}

void tg_rec_int(tg_buf *b, unsigned tag, int64_t v)
{
    put_key(b, tag, TG_REC_INT);
    tg_varint_put(b, tg_zigzag(v));
}

void tg_rec_bytes(tg_buf *b, unsigned tag, const void *p, size_t len)
{
    put_key(b, tag, TG_REC_BYTES);
    tg_varint_put(b, len);
    tg_buf_append(b, p, len);
}

void tg_rec_str(tg_buf *b, unsigned tag, const char *s)
{
    if (s)
        tg_rec_bytes(b, tag, s, strlen(s));
}

void tg_rec_dec(tg_buf *b, unsigned tag, tg_dec d)
{
    put_key(b, tag, TG_REC_DEC);
    tg_dec_put_compact(b, d);
}

void tg_rec_open(tg_rec_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
}

int tg_rec_next(tg_rec_reader *r, tg_rec_field *f)
{
    if (r->p >= r->end)
        return 0;
    unsigned __int128 key, v;
    if (tg_varint_get(&r->p, r->end, &key) || key >> 34)
        return -1;
    f->tag = (unsigned)(key >> 2);
    f->kind = (int)(key & 3);
    switch (f->kind) {
    case TG_REC_INT:
        if (tg_varint_get(&r->p, r->end, &v))
            return -1;
        __int128 s = tg_unzigzag(v);
        if (s < INT64_MIN || s > INT64_MAX)
            return -1;
        f->i = (int64_t)s;
        return 1;
    case TG_REC_BYTES:
        if (tg_varint_get(&r->p, r->end, &v) || v > (unsigned __int128)(r->end - r->p))
            return -1;
        f->data = r->p;
        f->len = (size_t)v;
        r->p += f->len;
        return 1;
    case TG_REC_DEC:
        return tg_dec_get_compact(&r->p, r->end, &f->d) ? -1 : 1;
    default:
        return -1;
    }
}

char *tg_rec_strdup(const tg_rec_field *f, tg_arena *a)
{
    return tg_arena_strndup(a, (const char *)f->data, f->len);
}

void tg_rec_copy(const tg_rec_field *f, char *dst, size_t cap)
{
    size_t n = f->len < cap - 1 ? f->len : cap - 1;
    memcpy(dst, f->data, n);
    dst[n] = '\0';
}
