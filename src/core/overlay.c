/* overlay.c -- sharded in-memory deltas per (meter, customer, minute) (see overlay.h). */
#include "core/overlay.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS TG_OVERLAY_SHARDS

typedef struct pair {
    uint64_t meter_seq, customer_seq;
    tg_delta *d; /* sorted by minute ascending */
    size_t n, cap;
    struct pair *next;
} pair;

typedef struct shard {
    pthread_rwlock_t lock;
    pair **buckets;
    size_t nbuckets, npairs;
    size_t ndeltas;
} shard;

struct tg_overlay {
    shard shards[SHARDS];
    size_t size; /* writer's count of deltas */
};

static uint64_t pair_hash(uint64_t m, uint64_t c)
{
    uint64_t h = (m * 0x9E3779B97F4A7C15ULL) ^ (c + 0x632BE59BD9B4E019ULL + (m << 6));
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 29);
}

tg_overlay *tg_overlay_new(void)
{
    tg_overlay *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    for (int i = 0; i < SHARDS; i++)
        pthread_rwlock_init(&o->shards[i].lock, NULL);
    return o;
}

static void shard_clear(shard *s)
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
}

void tg_overlay_free(tg_overlay *o)
{
    if (!o)
        return;
    for (int i = 0; i < SHARDS; i++) {
        shard_clear(&o->shards[i]);
        free(o->shards[i].buckets);
        pthread_rwlock_destroy(&o->shards[i].lock);
    }
    free(o);
}

static pair *find_pair(shard *s, uint64_t h, uint64_t m, uint64_t c)
{
    if (!s->nbuckets)
        return NULL;
    for (pair *p = s->buckets[(h >> 8) & (s->nbuckets - 1)]; p; p = p->next)
        if (p->meter_seq == m && p->customer_seq == c)
            return p;
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

int tg_overlay_add(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int64_t minute,
                   tg_dec sum, int64_t count)
{
    uint64_t h = pair_hash(meter_seq, customer_seq);
    shard *s = &o->shards[h & (SHARDS - 1)];
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
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

void *tg_overlay_rdlock(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq)
{
    shard *s = &o->shards[pair_hash(meter_seq, customer_seq) & (SHARDS - 1)];
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
    shard *s = &o->shards[h & (SHARDS - 1)];
    long n = 0;
    *out = NULL;
    pair *p = find_pair(s, h, meter_seq, customer_seq);
    if (p) {
        size_t lo = lower_bound(p, from), hi = lower_bound(p, to);
        if (hi > lo) {
            *out = malloc((hi - lo) * sizeof **out);
            if (!*out) {
                n = -1;
            } else {
                for (size_t i = hi; i > lo; i--) /* newest first */
                    (*out)[n++] = p->d[i - 1];
            }
        }
    }
    return n;
}

int tg_overlay_each_in_shard(tg_overlay *o, int shard_index,
                             int (*fn)(void *ctx, uint64_t meter_seq, uint64_t customer_seq,
                                       const tg_delta *d),
                             void *ctx)
{
    shard *s = &o->shards[shard_index];
    for (size_t b = 0; b < s->nbuckets; b++)
        for (pair *p = s->buckets[b]; p; p = p->next)
            for (size_t k = 0; k < p->n; k++) {
                int rc = fn(ctx, p->meter_seq, p->customer_seq, &p->d[k]);
                if (rc)
                    return rc;
            }
    return 0;
}

void tg_overlay_lock_shard(tg_overlay *o, int shard_index)
{
    pthread_rwlock_wrlock(&o->shards[shard_index].lock);
}

void tg_overlay_clear_shard_locked(tg_overlay *o, int shard_index)
{
    shard *s = &o->shards[shard_index];
    o->size -= s->ndeltas;
    s->ndeltas = 0;
    shard_clear(s);
}

void tg_overlay_unlock_shard(tg_overlay *o, int shard_index)
{
    pthread_rwlock_unlock(&o->shards[shard_index].lock);
}

size_t tg_overlay_size(tg_overlay *o)
{
    return o->size;
}
