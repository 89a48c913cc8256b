/* overlay.c -- sharded in-memory deltas per (meter, customer, minute) (see overlay.h).
 *
 * A shard holds its deltas in two parts. The hash part takes every add: pairs in a chained
 * hash table, each with a sorted array of 32-byte deltas, quick to update in place. When it
 * holds `freeze_at` deltas (or a quarter of the frozen part, whichever is more), it is merged
 * into the frozen part: the shard's pairs sorted by (meter, customer), each pair's deltas
 * encoded in minute order (varint minute step, compact decimal, zigzag count: about 8 bytes a
 * delta instead of about 43). Live traffic touches few minutes a pair and never freezes; a
 * backfill spread over weeks makes a delta per event and keeps most of them frozen, so the
 * overlay can hold millions of deltas and the writer folds it into the day pages on its
 * schedule instead of as soon as memory runs short (each fold of a backfilled page rewrites
 * the page whatever the number of deltas it takes in). The quarter rule bounds the re-encoding
 * to about five times per delta.
 *
 * Every reader and the fold see a pair's two parts merged, minute by minute. Deltas of one
 * minute are added where they meet; a sum that would overflow there is left as two deltas of
 * the same minute (the consumer's own checked addition then refuses it), and a minute whose
 * sum and count are both zero is dropped when frozen.
 */
#include "core/overlay.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "core/varint.h"

#define SHARDS TG_OVERLAY_SHARDS
#define FREEZE_AT_DEFAULT 4096

typedef struct pair {
    uint64_t meter_seq, customer_seq;
    tg_delta *d; /* sorted by minute ascending */
    size_t n, cap;
    struct pair *next;
} pair;

/* A frozen pair: its deltas are data[off, off + len) of the shard's frozen bytes. */
typedef struct frozen_pair {
    uint64_t meter_seq, customer_seq;
    size_t off, len;
} frozen_pair;

typedef struct shard {
    pthread_rwlock_t lock;
    /* hash part */
    pair **buckets;
    size_t nbuckets, npairs;
    size_t ndeltas;
    /* frozen part: pairs sorted by (meter, customer) */
    frozen_pair *fpairs;
    size_t nfpairs;
    unsigned char *fdata;
    size_t flen;
    size_t fdeltas;
    size_t freeze_after; /* after a failed freeze: hash deltas before the next attempt */
    size_t bytes;        /* both parts, as counted for tg_overlay_bytes */
} shard;

struct tg_overlay {
    shard shards[SHARDS];
    size_t freeze_at;
    size_t size, bytes; /* the writer's counts of deltas and bytes, all shards */
};

int tg_delta_vec_push(tg_delta_vec *v, const tg_delta *d)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        tg_delta *p = realloc(v->d, cap * sizeof *p);
        if (!p)
            return -1;
        v->d = p;
        v->cap = cap;
    }
    v->d[v->n++] = *d;
    return 0;
}

static uint64_t pair_hash(uint64_t m, uint64_t c)
{
    uint64_t h = (m * 0x9E3779B97F4A7C15ULL) ^ (c + 0x632BE59BD9B4E019ULL + (m << 6));
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 29);
}

static shard *shard_of(tg_overlay *o, uint64_t h)
{
    return &o->shards[h & (SHARDS - 1)];
}

int tg_overlay_shard(uint64_t meter_seq, uint64_t customer_seq)
{
    return (int)(pair_hash(meter_seq, customer_seq) & (SHARDS - 1));
}

tg_overlay *tg_overlay_new(size_t freeze_at)
{
    tg_overlay *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->freeze_at = freeze_at ? freeze_at : FREEZE_AT_DEFAULT;
    for (int i = 0; i < SHARDS; i++)
        pthread_rwlock_init(&o->shards[i].lock, NULL);
    return o;
}

/* Empties the hash part (keeping its bucket array). */
static void hash_clear(shard *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        pair *p = s->buckets[i];
        while (p) {
            pair *next = p->next;
            free(p->d);
            free(p);
            p = next;
        }
        s->buckets[i] = NULL;
    }
    s->npairs = 0;
    s->ndeltas = 0;
}

static void frozen_clear(shard *s)
{
    free(s->fpairs);
    free(s->fdata);
    s->fpairs = NULL;
    s->fdata = NULL;
    s->nfpairs = s->flen = s->fdeltas = 0;
}

void tg_overlay_free(tg_overlay *o)
{
    if (!o)
        return;
    for (int i = 0; i < SHARDS; i++) {
        hash_clear(&o->shards[i]);
        frozen_clear(&o->shards[i]);
        free(o->shards[i].buckets);
        pthread_rwlock_destroy(&o->shards[i].lock);
    }
    free(o);
}

static pair *find_pair(const shard *s, uint64_t h, uint64_t m, uint64_t c)
{
    if (!s->nbuckets)
        return NULL;
    for (pair *p = s->buckets[(h >> 8) & (s->nbuckets - 1)]; p; p = p->next)
        if (p->meter_seq == m && p->customer_seq == c)
            return p;
    return NULL;
}

static int key_cmp(uint64_t m1, uint64_t c1, uint64_t m2, uint64_t c2)
{
    if (m1 != m2)
        return m1 < m2 ? -1 : 1;
    return c1 < c2 ? -1 : c1 > c2;
}

static const frozen_pair *find_frozen(const shard *s, uint64_t m, uint64_t c)
{
    size_t lo = 0, hi = s->nfpairs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = key_cmp(s->fpairs[mid].meter_seq, s->fpairs[mid].customer_seq, m, c);
        if (cmp == 0)
            return &s->fpairs[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Doubles the bucket array of a shard. Caller holds its write lock. */
static int shard_grow(shard *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
    pair **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < s->nbuckets; i++) {
        pair *p = s->buckets[i];
        while (p) {
            pair *next = p->next;
            size_t k = (pair_hash(p->meter_seq, p->customer_seq) >> 8) & (n - 1);
            p->next = b[k];
            b[k] = p;
            p = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return 0;
}

/* Index of the first delta with minute >= m. */
static size_t lower_bound(const pair *p, int64_t m)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->d[mid].minute < m)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---------------------------------------------------------------- the frozen encoding */

static void frozen_put(tg_buf *b, int64_t *prev, const tg_delta *d)
{
    tg_varint_put(b, tg_zigzag((__int128)d->minute - *prev));
    *prev = d->minute;
    tg_dec_put_compact(b, d->sum);
    tg_varint_put(b, tg_zigzag(d->count));
}

/* Reads the next frozen delta: 1, or 0 at the end (the bytes were written by frozen_put, so a
 * malformed entry ends the pair as well). */
static int frozen_next(const unsigned char **p, const unsigned char *end, int64_t *prev,
                       tg_delta *out)
{
    unsigned __int128 step, count;
    if (*p >= end || tg_varint_get(p, end, &step) || tg_dec_get_compact(p, end, &out->sum) ||
        tg_varint_get(p, end, &count))
        return 0;
    *prev += (int64_t)tg_unzigzag(step);
    out->minute = *prev;
    out->count = (int64_t)tg_unzigzag(count);
    return 1;
}

/* Appends to v the pair's deltas with from <= minute < to, both parts merged, minute
 * ascending. fp and p may be NULL. Returns 0, or -1 when out of memory. */
static int pair_merged(const shard *s, const frozen_pair *fp, const pair *p, int64_t from,
                       int64_t to, tg_delta_vec *v)
{
    const unsigned char *f = fp ? s->fdata + fp->off : NULL, *fend = fp ? f + fp->len : NULL;
    int64_t prev = 0;
    tg_delta a;
    int have = fp ? frozen_next(&f, fend, &prev, &a) : 0;
    while (have && a.minute < from)
        have = frozen_next(&f, fend, &prev, &a);
    size_t k = p ? lower_bound(p, from) : 0, kend = p ? lower_bound(p, to) : 0;
    for (;;) {
        bool fa = have && a.minute < to, fb = k < kend;
        if (!fa && !fb)
            return 0;
        tg_delta e;
        if (fa && (!fb || a.minute < p->d[k].minute)) {
            e = a;
            have = frozen_next(&f, fend, &prev, &a);
        } else if (fa && a.minute == p->d[k].minute &&
                   !tg_dec_add(a.sum, p->d[k].sum, &e.sum) &&
                   !__builtin_add_overflow(a.count, p->d[k].count, &e.count)) {
            e.minute = a.minute;
            k++;
            have = frozen_next(&f, fend, &prev, &a);
        } else {
            e = p->d[k++]; /* earlier minute, or one whose sum would overflow: kept apart */
        }
        if (tg_delta_vec_push(v, &e))
            return -1;
    }
}

static int pair_ptr_cmp(const void *x, const void *y)
{
    const pair *a = *(pair *const *)x, *b = *(pair *const *)y;
    return key_cmp(a->meter_seq, a->customer_seq, b->meter_seq, b->customer_seq);
}

static size_t shard_bytes(const shard *s)
{
    return s->ndeltas * sizeof(tg_delta) + s->npairs * sizeof(pair) + s->flen +
           s->nfpairs * sizeof(frozen_pair) + s->nbuckets * sizeof(pair *);
}

/* Recounts the shard's bytes into the overlay's total. */
static void shard_recount(tg_overlay *o, shard *s)
{
    size_t b = shard_bytes(s);
    o->bytes = o->bytes - s->bytes + b;
    s->bytes = b;
}

/* Merges the shard's hash part into its frozen part and empties the hash part. On allocation
 * failure nothing changes (the shard simply stays unfrozen). Writer thread, without the lock:
 * the writer is the only thread that changes a shard, so it builds the new frozen part while
 * readers go on, and holds the write lock only to swap it in. */
static void shard_freeze(tg_overlay *o, shard *s)
{
    pair **hp = malloc((s->npairs ? s->npairs : 1) * sizeof *hp);
    frozen_pair *np = malloc((s->nfpairs + s->npairs + 1) * sizeof *np);
    tg_delta_vec v = {0};
    tg_buf data;
    tg_buf_init(&data, (size_t)1 << 40);
    size_t n = 0, i = 0, j = 0, nfp = 0, ndeltas = 0;
    bool failed = !hp || !np;
    for (size_t b = 0; !failed && b < s->nbuckets; b++)
        for (pair *p = s->buckets[b]; p; p = p->next)
            hp[n++] = p;
    if (!failed)
        qsort(hp, n, sizeof *hp, pair_ptr_cmp);
    while (!failed && (i < s->nfpairs || j < n)) {
        const frozen_pair *fp = NULL;
        const pair *p = NULL;
        int cmp = i == s->nfpairs ? 1
                  : j == n        ? -1
                                  : key_cmp(s->fpairs[i].meter_seq, s->fpairs[i].customer_seq,
                                            hp[j]->meter_seq, hp[j]->customer_seq);
        if (cmp <= 0)
            fp = &s->fpairs[i++];
        if (cmp >= 0)
            p = hp[j++];
        v.n = 0;
        if (pair_merged(s, fp, p, INT64_MIN, INT64_MAX, &v)) {
            failed = true;
            break;
        }
        frozen_pair out = {fp ? fp->meter_seq : p->meter_seq,
                           fp ? fp->customer_seq : p->customer_seq, data.len, 0};
        int64_t prev = 0;
        for (size_t k = 0; k < v.n; k++)
            if (v.d[k].sum != 0 || v.d[k].count != 0) {
                frozen_put(&data, &prev, &v.d[k]);
                ndeltas++;
            }
        out.len = data.len - out.off;
        if (out.len)
            np[nfp++] = out;
    }
    if (failed || data.failed) {
        free(np);
        tg_buf_free(&data);
        s->freeze_after = s->ndeltas * 2; /* out of memory: not again at the next add */
    } else {
        if (data.len) { /* the buffer grew by doubling: give the slack back */
            char *fit = realloc(data.data, data.len);
            if (fit)
                data.data = fit;
        }
        frozen_pair *old_pairs = s->fpairs;
        unsigned char *old_data = s->fdata;
        pthread_rwlock_wrlock(&s->lock);
        o->size = o->size - s->ndeltas - s->fdeltas + ndeltas;
        s->fpairs = np;
        s->nfpairs = nfp;
        s->fdata = (unsigned char *)data.data;
        s->flen = data.len;
        s->fdeltas = ndeltas;
        s->freeze_after = 0;
        hash_clear(s);
        shard_recount(o, s);
        pthread_rwlock_unlock(&s->lock);
        free(old_pairs);
        free(old_data);
    }
    free(hp);
    free(v.d);
}

/* ---------------------------------------------------------------- public */

int tg_overlay_add(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int64_t minute,
                   tg_dec sum, int64_t count)
{
    uint64_t h = pair_hash(meter_seq, customer_seq);
    shard *s = shard_of(o, h);
    int rc = -1;
    pthread_rwlock_wrlock(&s->lock);
    pair *p = find_pair(s, h, meter_seq, customer_seq);
    if (!p) {
        if ((s->npairs + 1) > s->nbuckets && shard_grow(s))
            goto out;
        p = calloc(1, sizeof *p);
        if (!p)
            goto out;
        p->meter_seq = meter_seq;
        p->customer_seq = customer_seq;
        size_t k = (h >> 8) & (s->nbuckets - 1);
        p->next = s->buckets[k];
        s->buckets[k] = p;
        s->npairs++;
    }
    size_t i = lower_bound(p, minute);
    if (i < p->n && p->d[i].minute == minute) {
        tg_dec s2;
        int64_t c2;
        if (tg_dec_add(p->d[i].sum, sum, &s2) || __builtin_add_overflow(p->d[i].count, count, &c2))
            goto out; /* nothing changed */
        p->d[i].sum = s2;
        p->d[i].count = c2;
        rc = 0;
        goto out;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        tg_delta *d = realloc(p->d, cap * sizeof *d);
        if (!d)
            goto out;
        p->d = d;
        p->cap = cap;
    }
    memmove(&p->d[i + 1], &p->d[i], (p->n - i) * sizeof *p->d);
    p->d[i].minute = minute;
    p->d[i].sum = sum;
    p->d[i].count = count;
    p->n++;
    o->size++;
    s->ndeltas++;
    rc = 0;
out:
    shard_recount(o, s);
    pthread_rwlock_unlock(&s->lock);
    if (!rc && s->ndeltas >= o->freeze_at && s->ndeltas >= s->fdeltas / 4 &&
        s->ndeltas >= s->freeze_after)
        shard_freeze(o, s);
    return rc;
}

void tg_overlay_prefetch(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int step)
{
    uint64_t h = pair_hash(meter_seq, customer_seq);
    const shard *s = shard_of(o, h);
    if (!s->nbuckets)
        return;
    pair *const *slot = &s->buckets[(h >> 8) & (s->nbuckets - 1)];
    if (step == 0) {
        __builtin_prefetch(slot);
        return;
    }
    const pair *p = *slot;
    if (step == 1) {
        if (p)
            __builtin_prefetch(p);
        return;
    }
    p = find_pair(s, h, meter_seq, customer_seq);
    if (p && p->n) { /* live adds land on the newest minute; a search starts in the middle */
        __builtin_prefetch(&p->d[p->n - 1]);
        __builtin_prefetch(&p->d[p->n / 2]);
    }
}

void *tg_overlay_rdlock(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq)
{
    shard *s = shard_of(o, pair_hash(meter_seq, customer_seq));
    pthread_rwlock_rdlock(&s->lock);
    return &s->lock;
}

void tg_overlay_unlock(void *lock)
{
    pthread_rwlock_unlock(lock);
}

long tg_overlay_read(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int64_t from,
                     int64_t to, tg_delta **out)
{
    uint64_t h = pair_hash(meter_seq, customer_seq);
    const shard *s = shard_of(o, h);
    tg_delta_vec v = {0};
    *out = NULL;
    if (pair_merged(s, find_frozen(s, meter_seq, customer_seq),
                    find_pair(s, h, meter_seq, customer_seq), from, to, &v)) {
        free(v.d);
        return -1;
    }
    for (size_t i = 0; i < v.n / 2; i++) { /* newest first */
        tg_delta t = v.d[i];
        v.d[i] = v.d[v.n - 1 - i];
        v.d[v.n - 1 - i] = t;
    }
    *out = v.d;
    return (long)v.n;
}

static int visit(const tg_delta_vec *v, uint64_t m, uint64_t c,
                 int (*fn)(void *ctx, uint64_t meter_seq, uint64_t customer_seq,
                           const tg_delta *d),
                 void *ctx)
{
    for (size_t k = 0; k < v->n; k++) {
        int rc = fn(ctx, m, c, &v->d[k]);
        if (rc)
            return rc;
    }
    return 0;
}

int tg_overlay_each_in_shard(tg_overlay *o, int shard_index,
                             int (*fn)(void *ctx, uint64_t meter_seq, uint64_t customer_seq,
                                       const tg_delta *d),
                             void *ctx)
{
    const shard *s = &o->shards[shard_index];
    tg_delta_vec v = {0};
    int rc = 0;
    /* frozen pairs, each merged with its hash part; then the pairs only in the hash part */
    for (size_t i = 0; !rc && i < s->nfpairs; i++) {
        const frozen_pair *fp = &s->fpairs[i];
        v.n = 0;
        rc = pair_merged(s, fp,
                         find_pair(s, pair_hash(fp->meter_seq, fp->customer_seq), fp->meter_seq,
                                   fp->customer_seq),
                         INT64_MIN, INT64_MAX, &v)
                 ? TG_ENOMEM
                 : visit(&v, fp->meter_seq, fp->customer_seq, fn, ctx);
    }
    for (size_t b = 0; !rc && b < s->nbuckets; b++)
        for (pair *p = s->buckets[b]; !rc && p; p = p->next)
            if (!find_frozen(s, p->meter_seq, p->customer_seq)) {
                tg_delta_vec pv = {p->d, p->n, p->cap};
                rc = visit(&pv, p->meter_seq, p->customer_seq, fn, ctx);
            }
    free(v.d);
    return rc;
}

void tg_overlay_lock_shard(tg_overlay *o, int shard_index)
{
    pthread_rwlock_wrlock(&o->shards[shard_index].lock);
}

void tg_overlay_clear_shard_locked(tg_overlay *o, int shard_index)
{
    shard *s = &o->shards[shard_index];
    o->size -= s->ndeltas + s->fdeltas;
    hash_clear(s);
    frozen_clear(s);
    shard_recount(o, s);
}

void tg_overlay_unlock_shard(tg_overlay *o, int shard_index)
{
    pthread_rwlock_unlock(&o->shards[shard_index].lock);
}

size_t tg_overlay_size(tg_overlay *o)
{
    return o->size;
}

size_t tg_overlay_shard_size(tg_overlay *o, int shard_index)
{
    const shard *s = &o->shards[shard_index];
    return s->ndeltas + s->fdeltas;
}

size_t tg_overlay_bytes(tg_overlay *o)
{
    return o->bytes;
}
