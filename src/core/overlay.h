/* overlay.h -- live usage: the aggregate deltas committed but not yet folded into storage.
 *
 * Events of additive meters (sum and count, no pre-aggregation window) are stored in blocks
 * and their effect on the minute buckets is kept here, in memory, until the writer folds it
 * into the stored day pages, a few shards at a time (core/writer.c). A reader adds the overlay to
 * the stored buckets, so a summary is current to the last acknowledged event. After a crash the
 * overlay is rebuilt by replaying the blocks and cancellations written after the last
 * fold: it is derived state, never the only copy.
 *
 * Layout: (meter, customer) pairs split into shards, each with its own rwlock. A shard takes
 * adds in a hash table of pairs, each holding its minute deltas sorted by minute, and past a
 * size moves them into a compact frozen part (about 8 bytes a delta; overlay.c). Only the
 * writer thread changes the overlay; readers take a shard's read lock for one lookup.
 */
#ifndef TG_OVERLAY_H
#define TG_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/decimal.h"

typedef struct tg_overlay tg_overlay;

typedef struct tg_delta {
    tg_dec sum; /* first: the 16-byte alignment of tg_dec would pad minute to 16 bytes */
    int64_t minute;
    int64_t count;
} tg_delta;

/* A growable array of deltas. Push returns 0, or -1 when out of memory; free d. */
typedef struct tg_delta_vec {
    tg_delta *d;
    size_t n, cap;
} tg_delta_vec;
int tg_delta_vec_push(tg_delta_vec *v, const tg_delta *d);

/* freeze_at: a shard's hash part is frozen once it holds this many deltas (and a quarter of
 * the frozen part); 0 for the default, 4096. Tests pass 1 to freeze on every add. */
tg_overlay *tg_overlay_new(size_t freeze_at);
void tg_overlay_free(tg_overlay *o);

/* Adds a delta to (meter, customer, minute). Writer thread only. Returns 0, or -1 when out of
 * memory or the sum would overflow the delta already in the hash part (nothing changed); an
 * overflow against a frozen delta is left for the reader's checked addition to refuse. */
int tg_overlay_add(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int64_t minute,
                   tg_dec sum, int64_t count);

/* Prefetches what tg_overlay_add of the pair will read, in steps: 0 its bucket slot, 1 the
 * first pair of that bucket, 2 the pair's deltas (each step reads what the one before
 * fetched, so they go a few adds apart). Writer thread only: it reads the table unlocked, as
 * nobody else changes it. */
void tg_overlay_prefetch(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int step);

/* Read access for one pair: tg_overlay_rdlock takes the read lock of the pair's shard and
 * returns it; while it is held the pair's deltas and the stored buckets are consistent (a
 * fold of the pair's shard commits only while holding its write lock). Release with
 * tg_overlay_unlock. */
void *tg_overlay_rdlock(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq);
void tg_overlay_unlock(void *lock);

/* Copies the deltas of (meter, customer) with from <= minute < to into out (malloc'd, newest
 * first; free it) and returns how many, or -1 on allocation failure. The caller holds the
 * pair's read lock. */
long tg_overlay_read(tg_overlay *o, uint64_t meter_seq, uint64_t customer_seq, int64_t from,
                     int64_t to, tg_delta **out);

/* The overlay is folded shard by shard. TG_OVERLAY_SHARDS shards; tg_overlay_each_in_shard
 * visits one shard's deltas (each pair's in minute order; writer thread) and returns the first
 * non-zero return of fn, or TG_ENOMEM. To fold, the writer
 * takes the shard's write lock before committing the stored pages, empties the shard once
 * the commit succeeded, and unlocks: no reader sees a pair both folded and still in the
 * overlay. */
#define TG_OVERLAY_SHARDS 64
/* The shard of a pair: stored with spilled usage (core/store.h), so it must not change. */
int tg_overlay_shard(uint64_t meter_seq, uint64_t customer_seq);
int tg_overlay_each_in_shard(tg_overlay *o, int shard,
                             int (*fn)(void *ctx, uint64_t meter_seq, uint64_t customer_seq,
                                       const tg_delta *d),
                             void *ctx);
void tg_overlay_lock_shard(tg_overlay *o, int shard);
void tg_overlay_clear_shard_locked(tg_overlay *o, int shard);
void tg_overlay_unlock_shard(tg_overlay *o, int shard);

/* Number of (pair, minute) deltas held, and the memory they take (about). Writer thread. */
size_t tg_overlay_size(tg_overlay *o);
size_t tg_overlay_shard_size(tg_overlay *o, int shard);
size_t tg_overlay_bytes(tg_overlay *o);

#endif
